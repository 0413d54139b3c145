"""The deck's CNN (docs/design.md): three conv3x3-ReLU-pool stages and two linear layers,
with any pooler of :data:`tdgs.pooling.POOLERS` in every pool (each with its own parameters)."""

from __future__ import annotations

import torch
from torch import nn

from .pooling import create_pooler
from .pooling.base import WINDOW
from .pooling.windows import pooled_size

WIDTHS = (16, 32, 64)  # conv output channels per stage
HIDDEN = 128  # units of the first linear layer


class PoolingCNN(nn.Module):
    """conv3x3(in->16, pad 1)-ReLU-pool - conv3x3(16->32)-ReLU-pool - conv3x3(32->64)-ReLU-pool -
    flatten - linear(64*h*w -> 128)-ReLU - linear(128 -> classes).

    Args:
        pooler: a pooler name (``max``, ``tdgs``, ...).
        image_shape: (C, H, W) of the input images; sizes the first linear layer and any
            position-wise pooler parameters (3x3 after the pools for 28x28, 4x4 for 32x32).
        num_classes: output logits.
        pooler_options: keyword options for every pooler (see :func:`tdgs.pooling.create_pooler`).
    """

    def __init__(self, pooler: str, image_shape: tuple[int, int, int], num_classes: int, **pooler_options) -> None:
        super().__init__()
        channels, height, width = image_shape
        window = [pooler_options.get(key, default) for key, default in WINDOW.items()]
        self.convs = nn.ModuleList()
        self.pools = nn.ModuleList()
        for width_out in WIDTHS:
            self.convs.append(nn.Conv2d(channels, width_out, 3, padding=1))
            self.pools.append(create_pooler(pooler, width_out, **pooler_options))
            channels = width_out
            height, width = pooled_size(height, width, *window)
        self.hidden = nn.Linear(channels * height * width, HIDDEN)
        self.head = nn.Linear(HIDDEN, num_classes)
        with torch.no_grad():  # sizes lazily shaped pooler parameters (TDGS position temperatures)
            self.eval()(torch.zeros(1, *image_shape))
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, pool in zip(self.convs, self.pools):
            x = pool(torch.relu(conv(x)))  # (B, C_i, H_i, W_i), halved by each pool
        x = torch.relu(self.hidden(x.flatten(1)))  # (B, 128)
        return self.head(x)  # (B, classes)
