"""MNIST, Fashion-MNIST and CIFAR-10 in their original file formats: downloaded into the data
folder by torchvision when online; read from files already there when offline (IDX files may be
gzipped, or staged from a folder given as ``source``); a clear :class:`DatasetUnavailable` naming
the files expected, where, and how to get them, when neither works."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from .splits import DatasetUnavailable, Splits

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_CLASSES = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
IDX_SOURCES = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (or any MNIST mirror)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (or Debian's package "
    "dataset-fashion-mnist, then dataset.source=/usr/share/datasets/fashion-mnist)",
}


def _stage(src: Path, target: Path) -> None:
    """Copy ``src`` (gunzipped if it ends in .gz) to ``target`` through a temporary file, so a
    half-written file never stays behind."""
    partial = target.with_name(target.name + ".partial")
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rb") as fin, open(partial, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    partial.replace(target)


def stage_idx_files(raw: Path, source: Path | None) -> None:
    """Put the four extracted IDX files in ``raw`` when they are not there yet: from ``source``
    (plain or ``.gz``) when given, else by extracting a ``.gz`` already in ``raw``."""
    if source is not None and not source.is_dir():
        raise DatasetUnavailable(f"dataset.source={str(source)!r} is not a readable folder")
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        target = raw / name
        candidates = [source / name, source / f"{name}.gz"] if source is not None else []
        found = next((c for c in [*candidates, raw / f"{name}.gz"] if c.is_file()), None)
        if not target.is_file() and found is not None:
            _stage(found, target)


def load_idx_dataset(name: str, *, root: str, source: str | None = None, download: bool = True) -> Splits:
    """MNIST or Fashion-MNIST (``name``) from ``root/<MNIST|FashionMNIST>/raw``."""
    cls = IDX_CLASSES[name]
    raw = Path(root) / cls.__name__ / "raw"
    stage_idx_files(raw, Path(source) if source is not None else None)
    reason = "download is off (dataset.download=false)"
    if download and not all((raw / f).is_file() for f in IDX_FILES):
        try:
            cls(root, train=True, download=True)
        except Exception as error:  # offline, or every mirror failed: explained below
            reason = f"download failed ({_first_line(error)})"
    missing = [f for f in IDX_FILES if not (raw / f).is_file()]
    if missing:
        raise DatasetUnavailable(
            f"{name}: missing {', '.join(missing)} in {raw} and {reason}. Get the four IDX files "
            f"({', '.join(IDX_FILES)}, plain or .gz) from {IDX_SOURCES[name]} and put them in {raw}, "
            f"or pass dataset.source=DIR with DIR holding them."
        )
    try:
        train, test = cls(root, train=True), cls(root, train=False)
    except Exception as error:
        raise DatasetUnavailable(f"{name}: cannot read the IDX files in {raw}: {_first_line(error)}") from error
    return Splits(
        name,
        train.data.unsqueeze(1),  # (N, 1, 28, 28) uint8
        train.targets.long(),
        test.data.unsqueeze(1),
        test.targets.long(),
        len(train.classes),
    )


CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)


def _read_cifar_batches(folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) from CIFAR-10's python pickle batches."""
    data, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"])
    images = torch.from_numpy(np.concatenate(data)).view(-1, 3, 32, 32)  # rows are C-major
    return images, torch.tensor(labels, dtype=torch.long)


def load_cifar10(*, root: str, download: bool = True) -> Splits:
    """CIFAR-10 from ``root/cifar-10-batches-py``: extracted from ``root/cifar-10-python.tar.gz``
    when only the archive is there, downloaded by torchvision (md5-checked) when neither is."""
    folder = Path(root) / CIFAR_FOLDER
    names = CIFAR_TRAIN + CIFAR_TEST
    reason = "download is off (dataset.download=false)"
    if not all((folder / n).is_file() for n in names):
        archive = Path(root) / CIFAR_ARCHIVE
        try:
            if archive.is_file():
                extract_archive(str(archive), root)
            elif download:
                datasets.CIFAR10(root, train=True, download=True)
        except Exception as error:  # offline, a bad archive: explained below
            reason = f"{'extracting' if archive.is_file() else 'download'} failed ({_first_line(error)})"
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetUnavailable(
            f"cifar10: missing {', '.join(missing)} in {folder} and {reason}. Download "
            f"{CIFAR_ARCHIVE} (python version) from https://www.cs.toronto.edu/~kriz/cifar.html "
            f"and put it, or its extracted {CIFAR_FOLDER} folder, in {root}."
        )
    try:
        train_images, train_labels = _read_cifar_batches(folder, CIFAR_TRAIN)
        test_images, test_labels = _read_cifar_batches(folder, CIFAR_TEST)
    except Exception as error:
        raise DatasetUnavailable(f"cifar10: cannot read the batches in {folder}: {_first_line(error)}") from error
    return Splits("cifar10", train_images, train_labels, test_images, test_labels, 10)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
