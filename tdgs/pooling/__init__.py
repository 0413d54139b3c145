"""The poolers of SPEC.md sections 1-2: one pure function and one thin module each, a registry
(:data:`POOLERS`) and a factory (:func:`create_pooler`)."""

from __future__ import annotations

import inspect

from torch import nn

from .base import Pool2d
from .basic import AvgPool, MaxPool
from .gated import GatedPool, gated_pool2d
from .mixed import MixedPool, mixed_pool2d
from .s3 import S3Pool, s3_pool2d
from .stochastic import StochasticPool, stochastic_pool2d
from .tdgs import TDGSPool, tdgs_pool2d

POOLERS: dict[str, type[Pool2d]] = {
    "max": MaxPool,
    "avg": AvgPool,
    "mixed": MixedPool,
    "gated": GatedPool,
    "stochastic": StochasticPool,
    "s3": S3Pool,
    "tdgs": TDGSPool,
}


def pooler_options(name: str) -> tuple[str, ...]:
    """The keyword options the pooler ``name`` takes (``kernel_size``, ``stride`` and its own)."""
    signature = inspect.signature(POOLERS[name].__init__)
    return tuple(p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY)


def create_pooler(name: str, channels: int, **options) -> nn.Module:
    """Build the pooler ``name`` (a key of :data:`POOLERS`) for ``channels`` input channels.

    Example:
        >>> create_pooler("tdgs", 16, t0=0.5, granularity="channel")
        TDGSPool(channels=16, kernel_size=2, stride=2, t0=0.5, granularity='channel', eps=0.1, rectifier='relu', normalize='l2', hard=True, eval_mode='expectation')
    """
    if name not in POOLERS:
        raise ValueError(f"pooler must be one of {', '.join(map(repr, POOLERS))}, but got {name!r}")
    allowed = pooler_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"pooler {name!r} takes the options {', '.join(allowed)}, but got {', '.join(unknown)}"
        )
    return POOLERS[name](channels, **options)


__all__ = [
    "POOLERS",
    "create_pooler",
    "pooler_options",
    "AvgPool",
    "GatedPool",
    "MaxPool",
    "MixedPool",
    "S3Pool",
    "StochasticPool",
    "TDGSPool",
    "gated_pool2d",
    "mixed_pool2d",
    "s3_pool2d",
    "stochastic_pool2d",
    "tdgs_pool2d",
]
