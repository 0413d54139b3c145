"""Pooling geometry: output sizes and the (B, C, Ho, Wo, k*k) view of every pooling window."""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("l2", "none", "l1", "max")  # window normalisations, the default first


def pooled_size(height: int, width: int, kernel_size: int, stride: int, padding: int = 0) -> tuple[int, int]:
    """Output size of a k x k, stride-s pooling with p padded lines on every side:
    floor((H + 2p - k) / s) + 1 per side (as ``nn.MaxPool2d``)."""
    if height + 2 * padding < kernel_size or width + 2 * padding < kernel_size:
        raise ValueError(
            f"input spatial size ({height}, {width}) is smaller than kernel_size={kernel_size}"
            + (f" with padding={padding}" if padding else "")
        )
    return (height + 2 * padding - kernel_size) // stride + 1, (width + 2 * padding - kernel_size) // stride + 1


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout of a kernel's outputs and input gradients: channels-last for a channels-last
    input (as ``F.max_pool2d`` keeps it), else contiguous."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def pooled_empty(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An uninitialised (B, C, height, width) output in ``x``'s dtype, device and memory format."""
    shape = (x.shape[0], x.shape[1], height, width)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))


def windows(x: torch.Tensor, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """The values of every pooling window, row-major within the window; padded positions hold 0
    (see :func:`padded_positions` for where they are). Built from the ``k*k`` strided
    slices of ``x`` (one per window offset): cheaper than ``unfold`` forward and backward, and
    standard operators (Slice, Concat) once exported to ONNX, where ``unfold`` becomes gathers.

    Shape: (B, C, H, W) -> (B, C, Ho, Wo, k*k).
    """
    if padding:
        x = F.pad(x, (padding,) * 4)  # (B, C, H + 2p, W + 2p), zeros
    height, width = pooled_size(x.shape[2], x.shape[3], kernel_size, stride)  # Ho, Wo
    rows, cols = stride * (height - 1) + 1, stride * (width - 1) + 1  # the lines a window offset spans
    offsets = range(kernel_size)
    slices = [x[:, :, i : i + rows : stride, j : j + cols : stride] for i in offsets for j in offsets]  # (B, C, Ho, Wo)
    return torch.stack(slices, dim=-1)  # (B, C, Ho, Wo, k*k)


def padded_positions(height: int, width: int, kernel_size: int, stride: int, padding: int, device=None) -> torch.Tensor:
    """Where the windows of an ``height x width`` input reach into the padding: True there.
    Padded positions are never picked and carry no weight, as max pooling's -inf padding.

    Shape: (Ho, Wo, k*k), bool.
    """
    inside = torch.ones(1, 1, height, width, device=device)
    return windows(inside, kernel_size, stride, padding)[0, 0] == 0  # (Ho, Wo, k*k)


def normalized_windows(a: torch.Tensor, normalize: str) -> torch.Tensor:
    """Each window (last dimension) divided by its ``normalize`` norm: ``none``, ``l1``, ``l2``, or
    ``max`` (largest absolute value). A zero window stays zero. Shape: (..., k*k) -> (..., k*k)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(map(repr, NORMALIZATIONS))}, but got {normalize!r}")
    if normalize == "none":
        return a
    tiny = torch.finfo(a.dtype).tiny
    peak = a.abs().amax(-1, keepdim=True)  # (..., 1)
    scaled = a / peak.clamp_min(tiny)  # in [-1, 1]: the norms below cannot overflow
    if normalize == "max":
        return scaled
    order = 1 if normalize == "l1" else 2
    norm = torch.linalg.vector_norm(scaled, order, dim=-1, keepdim=True)  # (..., 1)
    return scaled / norm.clamp_min(tiny)
