"""Shared helpers for the pooler tests."""

import pytest
import torch

from tdgs.pooling import POOLERS

ALL_POOLERS = list(POOLERS)
RANDOM_POOLERS = ["stochastic", "s3", "tdgs"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_seeded(module, x, seed=0):
    """Forward ``x`` through ``module`` with torch's generator at ``seed``."""
    torch.manual_seed(seed)
    return module(x)
