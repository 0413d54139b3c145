"""MNIST, Fashion-MNIST and CIFAR-10 in their original file formats: downloaded into the data
folder by torchvision when online; read from files already there when offline (IDX files may be
gzipped, or staged from a folder given as ``source``); a clear :class:`DatasetUnavailable` naming
the files expected, where, and how to get them, when neither works."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from ..errors import DatasetUnavailable, describe
from ..results import replace_atomic
from .splits import Splits

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_CLASSES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision's; also the folder under root
IDX_SOURCES = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (or any MNIST mirror)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (or Debian's package "
    "dataset-fashion-mnist, then dataset.source=/usr/share/datasets/fashion-mnist)",
}


def preparing(folder: Path) -> FileLock:
    """An inter-process lock on preparing the data in ``folder`` (staging, downloading,
    extracting): parallel jobs and SLURM jobs share one data folder, and the first one to take the
    lock does the work while the others wait and then find it done."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".prepare.lock"))


def check_idx(path: Path, shown: Path | None = None, remedy: str = "delete it to fetch it again") -> None:
    """Refuse a damaged or half-written IDX file: its header (magic number, then one big-endian
    size per dimension) must promise exactly the bytes the file holds. The message names ``shown``
    (default ``path``) and ends with ``remedy``."""
    shown = shown or path
    with open(path, "rb") as f:
        header = f.read(4)
        dims = f.read(4 * header[3]) if len(header) == 4 else b""
    size = path.stat().st_size
    if len(header) < 4 or header[:3] != b"\x00\x00\x08" or len(dims) != 4 * header[3]:
        raise DatasetUnavailable(f"{shown} is not an IDX file of bytes (damaged?); {remedy}")
    expected = 4 + len(dims) + math.prod(struct.unpack(f">{header[3]}I", dims))
    if size != expected:
        raise DatasetUnavailable(
            f"{shown} is damaged or incomplete: its header promises {expected} bytes, it holds {size}; {remedy}"
        )


def _stage(src: Path, target: Path) -> None:
    """Copy ``src`` (gunzipped if it ends in .gz) to ``target`` in one step, checked before it takes
    ``target``'s name: a half-written file never stays behind."""
    opener = gzip.open if src.suffix == ".gz" else open

    def read(fin, size: int = 1 << 20) -> bytes:  # reading errors are the source's (writing: the folder's)
        try:
            return fin.read(size)
        except (OSError, EOFError) as error:  # a truncated .gz, a damaged file
            raise DatasetUnavailable(f"{src} is damaged or incomplete ({describe(error)}); replace it") from None

    def write(partial: Path) -> None:
        with opener(src, "rb") as fin, open(partial, "wb") as fout:
            while chunk := read(fin):
                fout.write(chunk)  # an OSError here (a full disk): replace_atomic's OutputError
        check_idx(partial, shown=src, remedy="replace it")

    replace_atomic(target, write)


def stage_idx_files(raw: Path, source: Path | None) -> None:
    """Put the four extracted IDX files in ``raw`` when they are not there yet: from ``source``
    (plain or ``.gz``) when given, else by extracting a ``.gz`` already in ``raw``. Safe when
    several processes do it at once (see :func:`preparing`)."""
    if source is not None and not source.is_dir():
        raise DatasetUnavailable(f"dataset.source={str(source)!r} is not a readable folder")
    with preparing(raw):
        for name in IDX_FILES:
            target = raw / name
            candidates = [source / name, source / f"{name}.gz"] if source is not None else []
            found = next((c for c in [*candidates, raw / f"{name}.gz"] if c.is_file()), None)
            if not target.is_file() and found is not None:
                _stage(found, target)


def load_idx_dataset(name: str, *, root: str, source: str | None = None, download: bool = True) -> Splits:
    """MNIST or Fashion-MNIST (``name``) from ``root/<MNIST|FashionMNIST>/raw``."""
    from torchvision import datasets  # here: importing torchvision takes about 2 s (torch._dynamo)

    cls = getattr(datasets, IDX_CLASSES[name])
    raw = Path(root) / IDX_CLASSES[name] / "raw"
    stage_idx_files(raw, Path(source) if source is not None else None)
    reason = "download is off (dataset.download=false)"
    if download and not all((raw / f).is_file() for f in IDX_FILES):
        with preparing(raw):  # one download for all the jobs that need it
            try:
                if not all((raw / f).is_file() for f in IDX_FILES):
                    cls(root, train=True, download=True)
            except Exception as error:  # offline, or every mirror failed: explained below
                reason = f"download failed ({describe(error)})"
    missing = [f for f in IDX_FILES if not (raw / f).is_file()]
    if missing:
        raise DatasetUnavailable(
            f"{name}: missing {', '.join(missing)} in {raw} and {reason}. Get the four IDX files "
            f"({', '.join(IDX_FILES)}, plain or .gz) from {IDX_SOURCES[name]} and put them in {raw}, "
            f"or pass dataset.source=DIR with DIR holding them."
        )
    for f in IDX_FILES:
        check_idx(raw / f)
    try:
        train, test = cls(root, train=True), cls(root, train=False)
    except Exception as error:
        raise DatasetUnavailable(f"{name}: cannot read the IDX files in {raw}: {describe(error)}") from error
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
        try:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3072))
            labels.extend(entry["labels"])
        except Exception as error:  # truncated, not a pickle, another format
            raise DatasetUnavailable(
                f"cifar10: {folder / name} is damaged or incomplete ({describe(error)}); delete it to fetch it again"
            ) from None
    images = torch.from_numpy(np.concatenate(data)).view(-1, 3, 32, 32)  # rows are C-major
    return images, torch.tensor(labels, dtype=torch.long)


def _extract_cifar(archive: Path, root: Path) -> None:
    """Extract ``archive`` into a folder of this process, then move its batches folder into place
    in one rename: an interrupted extraction never leaves half a folder behind."""
    scratch = root / f".extract.{os.getpid()}"
    try:
        from torchvision.datasets.utils import extract_archive

        extract_archive(str(archive), str(scratch))
        (scratch / CIFAR_FOLDER).replace(root / CIFAR_FOLDER)
    except Exception as error:
        raise DatasetUnavailable(f"cifar10: {archive} is damaged or incomplete ({describe(error)}); delete it to download it again") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_cifar10(*, root: str, download: bool = True) -> Splits:
    """CIFAR-10 from ``root/cifar-10-batches-py``: extracted from ``root/cifar-10-python.tar.gz``
    when only the archive is there, downloaded by torchvision (md5-checked) when neither is. Safe
    when several processes do it at once (see :func:`preparing`)."""
    folder = Path(root) / CIFAR_FOLDER
    names = CIFAR_TRAIN + CIFAR_TEST
    reason = "download is off (dataset.download=false)"
    if not all((folder / n).is_file() for n in names):
        archive = Path(root) / CIFAR_ARCHIVE
        with preparing(Path(root)):
            if not all((folder / n).is_file() for n in names):
                if archive.is_file():
                    _extract_cifar(archive, Path(root))
                elif download:
                    try:
                        from torchvision.datasets import CIFAR10

                        CIFAR10(root, train=True, download=True)
                    except Exception as error:  # offline: explained below
                        reason = f"download failed ({describe(error)})"
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetUnavailable(
            f"cifar10: missing {', '.join(missing)} in {folder} and {reason}. Download "
            f"{CIFAR_ARCHIVE} (python version) from https://www.cs.toronto.edu/~kriz/cifar.html "
            f"and put it, or its extracted {CIFAR_FOLDER} folder, in {root}."
        )
    train_images, train_labels = _read_cifar_batches(folder, CIFAR_TRAIN)
    test_images, test_labels = _read_cifar_batches(folder, CIFAR_TEST)
    return Splits("cifar10", train_images, train_labels, test_images, test_labels, 10)


