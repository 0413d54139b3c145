"""Gated max-average pooling (Lee, Gallagher & Tu, "Generalizing Pooling Functions in Convolutional
Neural Networks: Mixed, Gated, and Tree", AISTATS 2016, arXiv:1509.08985)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backend, ops
from .base import LazyChannels, Pool2d
from .checks import check_choice, check_input

GRANULARITIES = ("channel", "layer")


def gate_map(
    x: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor,
    *,
    kernel_size: int = 2,
    stride: int = 2,
    padding: int = 0,
) -> torch.Tensor:
    """The responsive gate ``sigmoid(w . R_j + b)`` of every window (padded positions add nothing).
    Shape: (B, C, H, W) -> (B, C, Ho, Wo)."""
    check_input(x, kernel_size, stride, padding)
    channels = x.shape[1]
    weight = mask.view(-1, 1, kernel_size, kernel_size).expand(channels, 1, kernel_size, kernel_size)
    logit = F.conv2d(
        x, weight.to(x.dtype), bias.to(x.dtype).expand(channels), stride=stride, padding=padding, groups=channels
    )
    return torch.sigmoid(logit)


def gated_pool2d(
    x: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor,
    *,
    kernel_size: int = 2,
    stride: int = 2,
    padding: int = 0,
) -> torch.Tensor:
    """``g * max(R_j) + (1 - g) * mean(R_j)`` with the responsive gate ``g = sigmoid(w . R_j + b)``
    (the window's own values: padded positions carry no weight).

    Args:
        x: input, shape (B, C, H, W).
        mask: the gating mask ``w`` over the window (row-major), shape (C, k*k) or (1, k*k) (shared).
        bias: the gate bias ``b``, shape (C,) or (1,).

    Shape: (B, C, H, W) -> (B, C, Ho, Wo).
    """
    check_input(x, kernel_size, stride, padding)
    kernels = backend.kernels_for(x, mask, bias, kernel_size=kernel_size)
    if kernels is not None:
        return ops.apply(ops.GATED, kernels, x, mask, bias, kernel_size, stride, padding)
    gate = gate_map(x, mask, bias, kernel_size=kernel_size, stride=stride, padding=padding)  # (B, C, Ho, Wo)
    top = F.max_pool2d(x, kernel_size, stride, padding)  # (B, C, Ho, Wo)
    mean = F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=False)  # (B, C, Ho, Wo)
    return mean + gate * (top - mean)


class GatedPool(LazyChannels, Pool2d):
    """See :func:`gated_pool2d`. Mask and bias start at 0 (gate 0.5 on every window).

    Args:
        granularity: ``"channel"`` (a mask and a bias per channel, default) or ``"layer"`` (one
            mask and bias shared by all channels, as in Lee et al.'s own code).
        window: ``kernel_size``, ``stride``, ``padding`` (see :class:`~tdgs.pooling.base.Pool2d`).
    """

    def __init__(self, channels: int | None = None, *, granularity: str = "channel", **window) -> None:
        super().__init__(channels, **window)
        self.granularity = check_choice("granularity", granularity, GRANULARITIES)
        window_size = self.kernel_size * self.kernel_size
        if granularity == "channel" and self.channels is None:
            self.mask, self.bias = nn.UninitializedParameter(), nn.UninitializedParameter()
        else:
            rows = self.channels if granularity == "channel" else 1
            self.mask = nn.Parameter(torch.zeros(rows, window_size))
            self.bias = nn.Parameter(torch.zeros(rows))

    def channel_rows(self) -> int | None:
        return None if self.granularity == "layer" else self.mask.shape[0]

    def materialize(self, x: torch.Tensor) -> None:
        factory = {"device": x.device}  # the dtype stays the module's (float32 unless .to() changed it)
        self.mask.materialize((self.channels, self.kernel_size * self.kernel_size), **factory)
        self.bias.materialize(self.channels, **factory)
        with torch.no_grad():
            self.mask.zero_(), self.bias.zero_()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The gate of every window of ``x``, shape (B, C, Ho, Wo)."""
        self.check_channels(x)
        return gate_map(x, self.mask, self.bias, **self.window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_channels(x)
        return gated_pool2d(x, self.mask, self.bias, **self.window)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, granularity={self.granularity!r}"
