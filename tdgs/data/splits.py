"""The in-memory form every dataset takes, and the validation split held out of its training images."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError


@dataclass
class Splits:
    """A dataset's splits, whole, as tensors. ``val_*`` are empty when no validation split is held out."""

    name: str
    train_images: torch.Tensor  # (N, C, H, W) uint8, 0..255
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor  # (M, C, H, W) uint8
    test_labels: torch.Tensor  # (M,) int64
    num_classes: int
    val_images: torch.Tensor = field(default=None)  # (V, C, H, W) uint8, held out of the training images
    val_labels: torch.Tensor = field(default=None)  # (V,) int64

    def __post_init__(self) -> None:
        if self.val_images is None:
            self.val_images = self.train_images[:0]  # (0, C, H, W)
            self.val_labels = self.train_labels[:0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])

    def to(self, device: torch.device) -> Splits:
        """The same splits with every tensor on ``device``."""
        return Splits(
            self.name,
            self.train_images.to(device),
            self.train_labels.to(device),
            self.test_images.to(device),
            self.test_labels.to(device),
            self.num_classes,
            self.val_images.to(device),
            self.val_labels.to(device),
        )


def check_val_size(val_size: object) -> None:
    """A one-line ConfigError unless ``val_size`` is a fraction in [0, 1) or a whole number of images."""
    number = isinstance(val_size, (int, float)) and not isinstance(val_size, bool) and math.isfinite(val_size)
    if not (number and val_size >= 0 and (val_size < 1 or val_size == int(val_size))):
        raise ConfigError(
            f"dataset.val_size must be a fraction in [0, 1) or a whole number of images, but got {val_size!r}"
        )


def validation_count(val_size: float, train_count: int) -> int:
    """Images ``val_size`` holds out of ``train_count``: a fraction in [0, 1) of them, rounded (at
    least one unless 0), or a whole number of images (1 and more), fewer than ``train_count``."""
    check_val_size(val_size)
    if val_size < 1:
        count = math.floor(val_size * train_count + 0.5)  # halves up
        if val_size > 0 and count == 0:
            raise ConfigError(
                f"dataset.val_size={val_size} holds out 0 of the {train_count} training images; "
                f"use 0 (none) or at least {1 / train_count:.2g}"
            )
        return count
    if val_size >= train_count:
        raise ConfigError(
            f"dataset.val_size={int(val_size)} images, but the training set has only {train_count}; "
            f"hold out fewer (a count below {train_count}, or a fraction)"
        )
    return int(val_size)


def stratified_counts(labels: torch.Tensor, total: int, num_classes: int) -> torch.Tensor:
    """How many of ``total`` held-out images each class gives: its share of ``total`` rounded down,
    the images left over going to the largest remainders (ties: the lower class), so each class is
    within one image of its exact share. (num_classes,) int64."""
    per_class = torch.bincount(labels.cpu(), minlength=num_classes).double()  # (K,)
    exact = per_class * total / per_class.sum()
    counts = exact.floor()
    left = total - int(counts.sum())
    remainder_order = torch.sort(-(exact - counts), stable=True).indices  # largest remainder first
    counts[remainder_order[:left]] += 1
    return counts.long()


def hold_out(splits: Splits, val_size: float, split_seed: int = 0) -> Splits:
    """Hold ``val_size`` (see :func:`validation_count`) of the training images out as the validation
    split, stratified by class (:func:`stratified_counts`), drawn by ``split_seed`` alone (not the
    run's seed): every run with the same ``val_size`` and ``split_seed`` trains and selects on the
    same images. Both parts keep the images' original order. ``val_size=0`` returns ``splits``."""
    total = validation_count(val_size, len(splits.train_labels))
    if total == 0:
        return splits
    labels = splits.train_labels.cpu()
    counts = stratified_counts(labels, total, splits.num_classes)
    generator = torch.Generator().manual_seed(split_seed)
    held = []
    for label, count in enumerate(counts.tolist()):
        members = torch.nonzero(labels == label).flatten()  # (n_c,)
        if count >= len(members) > 0:
            raise ConfigError(
                f"dataset.val_size={val_size} leaves class {label} without training images "
                f"({len(members)} images, {count} held out); hold out fewer"
            )
        held.append(members[torch.randperm(len(members), generator=generator)[:count]])
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    is_val[torch.cat(held)] = True
    train, val = torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()
    images, device = splits.train_images, splits.train_labels.device
    return Splits(
        splits.name,
        images[train.to(images.device)],
        splits.train_labels[train.to(device)],
        splits.test_images,
        splits.test_labels,
        splits.num_classes,
        images[val.to(images.device)],
        splits.train_labels[val.to(device)],
    )
