"""Max and average pooling (the deck's baselines, ``max`` and ``avg``), as modules of the common
pooler interface."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Pool2d
from .checks import check_input


class MaxPool(Pool2d):
    """Max of each window: :func:`torch.nn.functional.max_pool2d`, the same in training and evaluation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_channels(x)
        check_input(x, **self.window)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool(Pool2d):
    """Mean of each window's own values (padded positions carry no weight: ``count_include_pad=False``),
    the same in training and evaluation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_channels(x)
        check_input(x, **self.window)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, count_include_pad=False)
