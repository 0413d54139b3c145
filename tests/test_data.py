"""Dataset loaders on small files written in the real on-disk formats (IDX, plain and gzipped;
CIFAR-10 python pickle batches, extracted and archived), the offline errors, and the two embedded
datasets."""

import gzip
import pickle
import struct
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
from torchvision import datasets

from tdgs.data import DatasetUnavailable, load_dataset
from tdgs.data.vision import CIFAR_FOLDER, IDX_FILES


def write_idx(path, array, gz=False):
    """An IDX file (big-endian dims, unsigned bytes), as MNIST ships them."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_idx_folder(folder, gz, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, 28, 28)),
        IDX_FILES[1]: rng.integers(0, 10, n_train),
        IDX_FILES[2]: rng.integers(0, 256, (n_test, 28, 28)),
        IDX_FILES[3]: rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz=gz)
    return arrays


def _check_idx(splits, arrays):
    assert splits.train_images.shape == (12, 1, 28, 28) and splits.train_images.dtype == torch.uint8
    assert torch.equal(splits.train_images[:, 0], torch.from_numpy(arrays[IDX_FILES[0]].astype(np.uint8)))
    assert torch.equal(splits.test_labels, torch.from_numpy(arrays[IDX_FILES[3]]).long())
    assert splits.num_classes == 10


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_files_in_the_data_dir(tmp_path, name, folder, gz):
    arrays = make_idx_folder(tmp_path / folder / "raw", gz)
    _check_idx(load_dataset(name, root=str(tmp_path), download=False, val_size=0), arrays)
    assert all((tmp_path / folder / "raw" / f).is_file() for f in IDX_FILES)  # extracted


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_files_from_a_source_folder(tmp_path, gz):
    arrays = make_idx_folder(tmp_path / "elsewhere", gz)
    splits = load_dataset("fashion_mnist", root=str(tmp_path / "data"), source=str(tmp_path / "elsewhere"), val_size=0)
    _check_idx(splits, arrays)


def test_missing_idx_files_offline_error_names_files_folder_and_remedy(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("mnist", root=str(tmp_path), download=False)
    message = str(info.value)
    assert all(name in message for name in IDX_FILES)
    assert str(tmp_path / "MNIST" / "raw") in message and "dataset.source" in message
    assert "\n" not in message


def test_failed_download_is_reported(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(datasets.FashionMNIST, "download", offline)
    with pytest.raises(DatasetUnavailable, match=r"download failed \(URLError.*dataset-fashion-mnist"):
        load_dataset("fashion_mnist", root=str(tmp_path))


def test_source_must_be_a_folder(tmp_path):
    with pytest.raises(DatasetUnavailable, match="not a readable folder"):
        load_dataset("mnist", root=str(tmp_path), source=str(tmp_path / "nope"))


def test_source_is_refused_for_other_datasets(tmp_path):
    with pytest.raises(ValueError, match="dataset.source"):
        load_dataset("digits", source=str(tmp_path))


def test_truncated_idx_file_is_reported(tmp_path):
    make_idx_folder(tmp_path / "MNIST" / "raw", gz=False)
    path = tmp_path / "MNIST" / "raw" / IDX_FILES[0]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("mnist", root=str(tmp_path), download=False)
    assert str(info.value) == (
        f"{path} is damaged or incomplete: its header promises 9424 bytes, it holds 100; delete it to fetch it again"
    )


def test_truncated_gz_source_is_reported_and_leaves_nothing_behind(tmp_path):
    make_idx_folder(tmp_path / "source", gz=True)
    gz = tmp_path / "source" / f"{IDX_FILES[0]}.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    with pytest.raises(DatasetUnavailable, match=rf"^{gz} is damaged or incomplete \(EOFError") as info:
        load_dataset("fashion_mnist", root=str(tmp_path / "data"), source=str(tmp_path / "source"))
    assert "\n" not in str(info.value)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not (raw / IDX_FILES[0]).exists() and not list(raw.glob("*.partial"))


def test_a_damaged_cifar_archive_is_reported(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(DatasetUnavailable, match=r"cifar-10-python.tar.gz is damaged or incomplete"):
        load_dataset("cifar10", root=str(tmp_path), download=False)
    assert not (tmp_path / CIFAR_FOLDER).exists() and not list(tmp_path.glob(".extract.*"))


def make_cifar_folder(folder, per_batch=3, seed=0):
    """The six python-version batches (each a latin1 pickle of data (N, 3072) and labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
            "batch_label": name,
        }
        (folder / name).write_bytes(pickle.dumps(batch))
        batches[name] = batch
    return batches


def _check_cifar(splits, batches):
    assert splits.train_images.shape == (15, 3, 32, 32) and splits.test_images.shape == (3, 3, 32, 32)
    first = batches["data_batch_1"]["data"][0]
    assert splits.train_images[0, 0, 0, 1].item() == first[1]  # red channel first, row-major
    assert splits.train_images[0, 2, 31, 31].item() == first[3071]
    assert splits.test_labels.tolist() == batches["test_batch"]["labels"]


def test_cifar_batches(tmp_path):
    batches = make_cifar_folder(tmp_path / CIFAR_FOLDER)
    _check_cifar(load_dataset("cifar10", root=str(tmp_path), download=False, val_size=0), batches)


def test_cifar_archive_is_extracted(tmp_path):
    batches = make_cifar_folder(tmp_path / "build" / CIFAR_FOLDER)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "build" / CIFAR_FOLDER, arcname=CIFAR_FOLDER)
    _check_cifar(load_dataset("cifar10", root=str(tmp_path), download=False, val_size=0), batches)


def test_cifar_missing_offline(tmp_path):
    with pytest.raises(DatasetUnavailable, match=r"missing data_batch_1.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=str(tmp_path), download=False)


def test_cifar_corrupt_batch(tmp_path):
    make_cifar_folder(tmp_path / CIFAR_FOLDER)
    (tmp_path / CIFAR_FOLDER / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetUnavailable, match=rf"{CIFAR_FOLDER}/data_batch_3 is damaged or incomplete"):
        load_dataset("cifar10", root=str(tmp_path), download=False)


def test_digits_split_is_fixed_and_stratified():
    first, second = load_dataset("digits", val_size=0), load_dataset("digits", val_size=0)
    assert first.train_images.shape == (1437, 1, 28, 28) and first.test_images.shape == (360, 1, 28, 28)
    assert torch.equal(first.test_images, second.test_images)
    shares = first.test_labels.bincount() / 360
    assert (shares - 0.1).abs().max() < 0.01
    assert first.train_images.max() == 255 and first.train_images.min() == 0
    assert not torch.equal(load_dataset("digits", seed=1, val_size=0).test_labels, first.test_labels)


@pytest.mark.parametrize("geometry,shape", [("mnist", (1, 28, 28)), ("cifar", (3, 32, 32))])
def test_synthetic_is_deterministic_per_seed(geometry, shape):
    a = load_dataset("synthetic", geometry=geometry, train_size=50, test_size=20, seed=3, val_size=0)
    b = load_dataset("synthetic", geometry=geometry, train_size=50, test_size=20, seed=3, val_size=0)
    c = load_dataset("synthetic", geometry=geometry, train_size=50, test_size=20, seed=4, val_size=0)
    assert a.image_shape == shape and len(a.train_labels) == 50 and len(a.test_labels) == 20
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_images, c.train_images)


def test_synthetic_bad_geometry():
    with pytest.raises(ValueError, match="geometry.*'square'"):
        load_dataset("synthetic", geometry="square")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="'imagenet'"):
        load_dataset("imagenet")


def test_a_damaged_source_file_is_named_not_its_temporary_copy(tmp_path):
    make_idx_folder(tmp_path / "source", gz=False)
    src = tmp_path / "source" / IDX_FILES[1]
    src.write_bytes(src.read_bytes()[:-3])
    with pytest.raises(
        DatasetUnavailable,
        match=rf"^{src} is damaged or incomplete: its header promises \d+ bytes, it holds \d+; replace it$",
    ):
        load_dataset("fashion_mnist", root=str(tmp_path / "data"), source=str(tmp_path / "source"))
    assert not list((tmp_path / "data" / "FashionMNIST" / "raw").glob(".*partial"))
