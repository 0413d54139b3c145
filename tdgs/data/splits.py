"""The in-memory form every dataset takes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Splits:
    """A dataset's train and test splits, whole, as tensors."""

    name: str
    train_images: torch.Tensor  # (N, C, H, W) uint8, 0..255
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor  # (M, C, H, W) uint8
    test_labels: torch.Tensor  # (M,) int64
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_images.shape[1:])

    def to(self, device: torch.device) -> "Splits":
        """The same splits with every tensor on ``device``."""
        return Splits(
            self.name,
            self.train_images.to(device),
            self.train_labels.to(device),
            self.test_images.to(device),
            self.test_labels.to(device),
            self.num_classes,
        )
