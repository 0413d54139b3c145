"""Datasets as whole in-memory splits: uint8 image tensors (N, C, H, W) and int64 labels (N,).

``load_dataset(name, ...)`` serves ``mnist``, ``fashion_mnist``, ``cifar10`` (torchvision files),
``digits`` (scikit-learn's bundled real digits, offline) and ``synthetic`` (generated)."""

from __future__ import annotations

from .digits import load_digits
from ..errors import DatasetUnavailable
from .splits import Splits
from .synthetic import make_synthetic
from .vision import load_cifar10, load_idx_dataset

# each dataset and the options of load_dataset it takes
DATASET_OPTIONS = {
    "mnist": ("root", "download", "source"),
    "fashion_mnist": ("root", "download", "source"),
    "cifar10": ("root", "download"),
    "digits": ("seed",),
    "synthetic": ("geometry", "train_size", "test_size", "seed"),
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
    """
    if name in ("mnist", "fashion_mnist"):
        return load_idx_dataset(name, root=root, source=source, download=download)
    if source is not None:
        raise ValueError(f"dataset.source is for mnist and fashion_mnist only, but dataset is {name!r}")
    if name == "cifar10":
        return load_cifar10(root=root, download=download)
    if name == "digits":
        return load_digits(seed=seed)
    if name == "synthetic":
        return make_synthetic(geometry=geometry, train_size=train_size, test_size=test_size, seed=seed)
    raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}, but got {name!r}")


__all__ = ["DATASETS", "DatasetUnavailable", "Splits", "load_dataset"]
