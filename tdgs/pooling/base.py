"""What every pooler module shares: channel count, kernel_size and stride, input checks."""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_positive_int
from .windows import pooled_size


class Pool2d(nn.Module):
    """Base of the pooler modules: ``(B, C, H, W) -> (B, C, floor((H-k)/s)+1, floor((W-k)/s)+1)``.

    Args:
        channels: number of input channels ``C`` (sizes the per-channel parameters, if any).
        kernel_size: window side ``k`` (as :class:`torch.nn.MaxPool2d`).
        stride: window step ``s``.
    """

    def __init__(self, channels: int, *, kernel_size: int = 2, stride: int = 2) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.stride = check_positive_int("stride", stride)

    def output_size(self, x: torch.Tensor) -> tuple[int, int]:
        """Check that ``x`` is a ``(B, C, H, W)`` batch this pooler can take; return ``(Ho, Wo)``."""
        if x.dim() != 4:
            raise ValueError(f"input must have shape (B, C, H, W), but got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(
                f"input has {x.shape[1]} channels, but this pooler was built for channels={self.channels}"
            )
        return pooled_size(x.shape[2], x.shape[3], self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}"
