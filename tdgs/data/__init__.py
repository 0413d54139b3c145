"""Datasets as whole in-memory splits: uint8 image tensors (N, C, H, W) and int64 labels (N,).

``load_dataset(name, ...)`` serves ``mnist``, ``fashion_mnist``, ``cifar10`` (torchvision files),
``digits`` (scikit-learn's bundled real digits, offline) and ``synthetic`` (generated)."""

from __future__ import annotations

from .digits import load_digits
from ..errors import DatasetUnavailable
from .splits import Splits, hold_out
from .synthetic import make_synthetic
from .vision import load_cifar10, load_idx_dataset

VALIDATION_OPTIONS = ("val_size", "split_seed")  # every dataset's: the validation split
# each dataset and the options of load_dataset it takes
DATASET_OPTIONS = {
    "mnist": ("root", "download", "source", *VALIDATION_OPTIONS),
    "fashion_mnist": ("root", "download", "source", *VALIDATION_OPTIONS),
    "cifar10": ("root", "download", *VALIDATION_OPTIONS),
    "digits": ("seed", *VALIDATION_OPTIONS),
    "synthetic": ("geometry", "train_size", "test_size", "seed", *VALIDATION_OPTIONS),
}
DATASETS = tuple(DATASET_OPTIONS)


def load_dataset(
    name: str,
    *,
    root: str = "data",
    source: str | None = None,
    download: bool = True,
    geometry: str = "mnist",
    train_size: int = 2000,
    test_size: int = 500,
    seed: int = 0,
    val_size: float = 0.1,
    split_seed: int = 0,
) -> Splits:
    """Load the dataset ``name`` (one of :data:`DATASETS`) whole. Each takes only its own options
    (:data:`DATASET_OPTIONS`; ``tdgs-train``'s ``dataset.<option>``, whose defaults are these):

    Args:
        root: torchvision sets: where downloaded or extracted files live.
        source: MNIST, Fashion-MNIST: a folder holding the four IDX files (plain or .gz), read
            instead of ``root``'s (e.g. /usr/share/datasets/fashion-mnist).
        download: torchvision sets: try to download missing files.
        geometry: synthetic: ``mnist`` (1x28x28) or ``cifar`` (3x32x32) images.
        train_size, test_size: synthetic: images per split.
        seed: digits: the 80/20 split; synthetic: the generation. Fixed, independent of the run's seed.
        val_size: every dataset: the validation split held out of the training images, a fraction in
            [0, 1) or a number of images; 0 trains on them all (:func:`tdgs.data.splits.hold_out`).
        split_seed: every dataset: which images are held out. Fixed, independent of the run's seed.
    """
    if source is not None and name not in ("mnist", "fashion_mnist"):
        raise ValueError(f"dataset.source is for mnist and fashion_mnist only, but dataset is {name!r}")
    if name in ("mnist", "fashion_mnist"):
        splits = load_idx_dataset(name, root=root, source=source, download=download)
    elif name == "cifar10":
        splits = load_cifar10(root=root, download=download)
    elif name == "digits":
        splits = load_digits(seed=seed)
    elif name == "synthetic":
        splits = make_synthetic(geometry=geometry, train_size=train_size, test_size=test_size, seed=seed)
    else:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}, but got {name!r}")
    return hold_out(splits, val_size, split_seed)


__all__ = ["DATASETS", "DatasetUnavailable", "Splits", "load_dataset"]
