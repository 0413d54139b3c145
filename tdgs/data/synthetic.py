"""Generated, learnable images for tests and quick checks: each of 10 classes is a fixed layout of
Gaussian blobs; an image is its class's layout, randomly shifted by up to 2 pixels, rescaled in
contrast and noised. The same ``seed`` always gives the same images."""

from __future__ import annotations

import torch

from .splits import Splits

GEOMETRIES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
CLASSES = 10
BLOBS = 3  # blobs per class layout
MAX_SHIFT = 2  # pixels


def _layouts(shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """One blob layout per class, shape (CLASSES, C, H, W), values in [0, 1]."""
    channels, height, width = shape
    rows = torch.arange(height).view(1, 1, height, 1).float()
    cols = torch.arange(width).view(1, 1, 1, width).float()
    centres = torch.rand(CLASSES, BLOBS, 2, generator=generator) * 0.7 + 0.15  # away from edges
    widths = torch.rand(CLASSES, BLOBS, generator=generator) * 2 + 1.5  # pixels
    colour = torch.rand(CLASSES, BLOBS, channels, generator=generator) * 0.7 + 0.3
    cy = (centres[..., 0] * height).view(CLASSES, BLOBS, 1, 1)
    cx = (centres[..., 1] * width).view(CLASSES, BLOBS, 1, 1)
    bumps = torch.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * widths.view(CLASSES, BLOBS, 1, 1) ** 2))
    # (CLASSES, BLOBS, H, W) x (CLASSES, BLOBS, C) -> (CLASSES, C, H, W)
    return torch.einsum("kbhw,kbc->kchw", bumps, colour).clamp(0, 1)


def _sample(layouts: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(CLASSES, (count,), generator=generator)
    images = layouts[labels]  # (N, C, H, W)
    shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (count, 2), generator=generator)
    for dy, dx in torch.unique(shifts, dim=0).tolist():
        chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
        images[chosen] = images[chosen].roll((dy, dx), dims=(2, 3))
    contrast = torch.rand(count, 1, 1, 1, generator=generator) * 0.6 + 0.7
    noise = torch.randn(images.shape, generator=generator) * 0.1
    pixels = (images * contrast + noise).clamp(0, 1)
    return (pixels * 255).round().to(torch.uint8), labels


def make_synthetic(*, geometry: str = "mnist", train_size: int = 2000, test_size: int = 500, seed: int = 0) -> Splits:
    """Synthetic splits in MNIST (1x28x28) or CIFAR (3x32x32) ``geometry``."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"dataset.geometry must be one of {', '.join(map(repr, GEOMETRIES))}, but got {geometry!r}")
    for key, value in (("train_size", train_size), ("test_size", test_size)):
        if value < 1:
            raise ValueError(f"dataset.{key} must be >= 1, but got {value}")
    generator = torch.Generator().manual_seed(seed)
    layouts = _layouts(GEOMETRIES[geometry], generator)
    train_images, train_labels = _sample(layouts, train_size, generator)
    test_images, test_labels = _sample(layouts, test_size, generator)
    return Splits("synthetic", train_images, train_labels, test_images, test_labels, CLASSES)
