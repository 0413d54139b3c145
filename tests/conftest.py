"""Shared helpers for the pooler tests."""

import pytest
import torch

from tdgs.pooling import POOLERS, native
from tdgs.pooling.tdgs import gumbel_noise, kernel_gumbels

ALL_POOLERS = list(POOLERS)
RANDOM_POOLERS = ["stochastic", "s3", "tdgs"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_seeded(module, x, seed=0):
    """Forward ``x`` through ``module`` with torch's generator at ``seed``."""
    torch.manual_seed(seed)
    return module(x)


def drawn_gumbels(seed, shape, dtype=torch.float32):
    """The Gumbel noise a TDGS pooler on the CPU draws right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    if native.available():
        return kernel_gumbels(native.draw_seed(), shape, dtype)
    return gumbel_noise(shape, dtype=dtype)
