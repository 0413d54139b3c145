"""Data augmentation on the device, on a whole in-memory batch (no per-image Python), drawn anew at
every call from torch's generator of the batch's device: reproducible under the run's seed, and
inside a CUDA graph drawn afresh at every replay.

``crop``: a random crop of the image zero-padded by :func:`crop_padding` pixels on each side (the
standard augmentation of CIFAR-10 training, e.g. He et al. 2016, and of S3Pool's ``-crop``);
``flip_crop``: the same, then a horizontal flip of half the images (``-flip``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop", "flip_crop")


def crop_padding(side: int) -> int:
    """Padding of the random crop for images ``side`` pixels tall: 4 from 32 px (CIFAR-10), 2 below
    (28 px: MNIST, Fashion-MNIST, digits)."""
    return 4 if side >= 32 else 2


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Each image shifted by an offset drawn uniformly from ``-padding..padding`` per axis (the crop
    of the zero-padded image at that offset) and, with ``flip``, mirrored left-right with
    probability 1/2. Any dtype; labels are not touched.

    Shape: (B, C, H, W) -> (B, C, H, W)."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p), zeros around
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), device=device)  # (B, 2): top, left
    rows = offsets[:, :1] + torch.arange(height, device=device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(width, device=device)  # (B, W)
    if flip:
        mirrored = torch.rand(batch, 1, device=device) < 0.5  # (B, 1)
        cols = torch.where(mirrored, cols.flip(1), cols)
    image = torch.arange(batch, device=device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    channel = torch.arange(channels, device=device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return padded[image, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)
