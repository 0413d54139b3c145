"""The poolers (docs/design.md): one pure function and one thin module each, a registry
(:data:`POOLERS`), a factory (:func:`create_pooler`), and :func:`replace_pooling`, which puts a
pooler in place of a network's ``nn.MaxPool2d`` layers."""

from __future__ import annotations

import inspect
import typing

from torch import nn

from .base import Pool2d
from .basic import AvgPool, MaxPool
from .gated import GatedPool, gated_pool2d
from .mixed import MixedPool, mixed_pool2d
from .replace import replace_pooling
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


def pooler_signature(name: str) -> dict[str, tuple[type, object]]:
    """option -> (type, default) of every keyword option the pooler ``name`` takes: the window's
    (``kernel_size``, ``stride``, ``padding``, ``dilation``, ``ceil_mode``), then its own. The one
    place the options' defaults are written is the modules' signatures; the config schemas derive
    from this."""
    options = {}
    for cls in reversed(POOLERS[name].__mro__):
        if issubclass(cls, Pool2d) and "__init__" in vars(cls):
            hints = typing.get_type_hints(cls.__init__)
            for p in inspect.signature(cls.__init__).parameters.values():
                if p.kind is p.KEYWORD_ONLY:
                    options[p.name] = (hints[p.name], p.default)
    return options


def pooler_options(name: str) -> tuple[str, ...]:
    """The keyword options the pooler ``name`` takes (see :func:`pooler_signature`)."""
    return tuple(pooler_signature(name))


def create_pooler(name: str, channels: int | None = None, **options) -> nn.Module:
    """Build the pooler ``name`` (a key of :data:`POOLERS`) for ``channels`` input channels
    (``None``: taken from the first input).

    Example:
        >>> create_pooler("tdgs", 16, t0=0.5, granularity="channel").temperature.shape
        torch.Size([16, 1, 1])
    """
    if name not in POOLERS:
        raise ValueError(f"pooler must be one of {', '.join(map(repr, POOLERS))}, but got {name!r}")
    allowed = pooler_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"pooler {name!r} takes the options {', '.join(allowed)}, but got {', '.join(unknown)}")
    return POOLERS[name](channels, **options)


__all__ = [
    "POOLERS",
    "create_pooler",
    "pooler_options",
    "pooler_signature",
    "replace_pooling",
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
