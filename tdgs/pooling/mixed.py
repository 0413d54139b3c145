"""Mixed max-average pooling (Lee, Gallagher & Tu, "Generalizing Pooling Functions in Convolutional
Neural Networks: Mixed, Gated, and Tree", AISTATS 2016, arXiv:1509.08985)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backend, ops
from .base import LazyChannels, Pool2d
from .checks import check_choice, check_input
from .gated import GRANULARITIES  # mixed pooling is gated pooling with a constant gate


def mixed_pool2d(
    x: torch.Tensor, mix_logit: torch.Tensor, *, kernel_size: int = 2, stride: int = 2, padding: int = 0
) -> torch.Tensor:
    """``sigmoid(l) * max(R_j) + (1 - sigmoid(l)) * mean(R_j)`` for every window ``R_j`` (of the
    window's own values: padded positions carry no weight).

    Args:
        x: input, shape (B, C, H, W).
        mix_logit: the mixing logit ``l``, shape (C,) (one per channel) or (1,) (one per layer).

    Shape: (B, C, H, W) -> (B, C, Ho, Wo).
    """
    check_input(x, kernel_size, stride, padding)
    kernels = backend.kernels_for(x, mix_logit, kernel_size=kernel_size)
    if kernels is not None:  # the gated kernel without a mask
        return ops.apply(ops.GATED, kernels, x, None, mix_logit, kernel_size, stride, padding)
    gate = torch.sigmoid(mix_logit).view(1, -1, 1, 1)  # (1, C or 1, 1, 1)
    top = F.max_pool2d(x, kernel_size, stride, padding)  # (B, C, Ho, Wo)
    mean = F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=False)  # (B, C, Ho, Wo)
    return mean + gate * (top - mean)


class MixedPool(LazyChannels, Pool2d):
    """See :func:`mixed_pool2d`. The logit ``l`` starts at 0 (gate 0.5).

    Args:
        granularity: ``"channel"`` (one ``l`` per channel, default) or ``"layer"`` (one scalar).
        window: ``kernel_size``, ``stride``, ``padding`` (see :class:`~tdgs.pooling.base.Pool2d`).
    """

    def __init__(self, channels: int | None = None, *, granularity: str = "channel", **window) -> None:
        super().__init__(channels, **window)
        self.granularity = check_choice("granularity", granularity, GRANULARITIES)
        if granularity == "layer":
            self.mix_logit = nn.Parameter(torch.zeros(1))
        elif self.channels is None:
            self.mix_logit = nn.UninitializedParameter()
        else:
            self.mix_logit = nn.Parameter(torch.zeros(self.channels))

    def channel_rows(self) -> int | None:
        return None if self.granularity == "layer" else self.mix_logit.shape[0]

    def materialize(self, x: torch.Tensor) -> None:
        self.mix_logit.materialize(self.channels, device=x.device)  # the dtype stays the module's
        with torch.no_grad():
            self.mix_logit.zero_()

    @property
    def gate(self) -> torch.Tensor:
        """The weight of the max, ``sigmoid(l)``, shape (C,) or (1,)."""
        return torch.sigmoid(self.mix_logit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_channels(x)
        return mixed_pool2d(x, self.mix_logit, **self.window)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, granularity={self.granularity!r}"
