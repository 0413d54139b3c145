"""What the network sees: uint8 image batches scaled to [0, 1], normalised per channel with the
training split's mean and standard deviation (``dataset.normalize``), and augmented in training
(``trainer.augment``: :mod:`tdgs.data.augment`); the same for training and evaluation but the
augmentation."""

from __future__ import annotations

import torch

from .augment import AUGMENTS, crop_padding, random_crop_flip


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 ``images`` scaled to [0, 1], in float64
    over chunks (no float copy of the whole set). (N, C, H, W) -> (C,), (C,) float32."""
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().div_(255)  # (n, C, H, W)
        total += x.sum((0, 2, 3))
        squares += x.square().sum((0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float(), std.float()


class Inputs:
    """uint8 batches -> the network's float inputs.

    Args:
        mean, std: (C,) per-channel statistics to normalise with, or None for inputs in [0, 1].
        augment: one of :data:`~tdgs.data.augment.AUGMENTS`, applied in training only.
        side: the images' height, which sets the crop's padding.
    """

    def __init__(
        self,
        *,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        augment: str = "none",
        side: int = 28,
    ) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(map(repr, AUGMENTS))}, but got {augment!r}")
        self.augment, self.padding = augment, crop_padding(side)
        self.mean, self.std = mean, std
        # x / 255 then (x - mean) / std, as one multiply and one subtraction: x * scale - shift
        self.scale = None if mean is None else (1 / (255 * std)).view(-1, 1, 1)  # (C, 1, 1)
        self.shift = None if mean is None else (mean / std).view(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """(B, C, H, W) uint8 -> (B, C, H, W) float32."""
        if training and self.augment != "none":
            images = random_crop_flip(images, self.padding, flip=self.augment == "flip_crop")
        if self.scale is None:
            return images.float().div_(255)
        return images.float().mul_(self.scale).sub_(self.shift)
