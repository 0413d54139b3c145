"""Put a pooler of this package in place of a network's pooling layers (``nn.MaxPool2d`` by
default), with the same window: TDGS in any CNN in two lines.

    >>> model = torchvision.models.resnet18(num_classes=10)
    >>> replace_pooling(model, "tdgs")
"""

from __future__ import annotations

from torch import nn


def _square(value, name: str, where: str) -> int:
    """An int from an int or a square tuple (``nn.MaxPool2d`` takes both)."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"{where} has {name}={tuple(value)}; the poolers take square windows only")
        value = value[0]
    return value


def window_of(pool: nn.Module, where: str) -> dict:
    """``pool``'s window as the poolers take it, or a one-line ValueError for what they cannot do."""
    kernel_size = _square(pool.kernel_size, "kernel_size", where)
    stride = _square(pool.stride if pool.stride is not None else pool.kernel_size, "stride", where)
    window = {"kernel_size": kernel_size, "stride": stride, "padding": _square(getattr(pool, "padding", 0), "padding", where)}
    if _square(getattr(pool, "dilation", 1), "dilation", where) != 1:
        raise ValueError(f"{where} has dilation={pool.dilation}; the poolers do not dilate their windows")
    if getattr(pool, "ceil_mode", False):
        raise ValueError(f"{where} has ceil_mode=True; the poolers' windows never start in the padding")
    if getattr(pool, "return_indices", False):
        raise ValueError(f"{where} returns indices (return_indices=True); a pooler returns its output only")
    return window


def replace_pooling(model: nn.Module, name: str, *, types: tuple[type, ...] = (nn.MaxPool2d,), **options) -> nn.Module:
    """Replace, in place, every module of ``types`` in ``model`` by the pooler ``name`` (see
    :func:`~tdgs.pooling.create_pooler`; ``options`` go to each pooler) with the same kernel size,
    stride and padding. Each pooler takes its channel count (and TDGS its position temperatures)
    from its first input, on that input's device and in its dtype. Returns ``model``.

    Raises ValueError, in one line naming the layer, for a pool a pooler cannot stand in for
    (a non-square window, dilation, ``ceil_mode``, ``return_indices``) or a bad ``name``/option,
    before anything is replaced.
    """
    from . import create_pooler  # the registry imports this module

    targets = [(parent, child, f"{prefix}.{child}" if prefix else child)
               for prefix, parent in model.named_modules()
               for child, module in parent.named_children() if isinstance(module, types)]
    poolers = [create_pooler(name, **window_of(getattr(parent, child), where), **options) for parent, child, where in targets]
    for (parent, child, _), pooler in zip(targets, poolers):
        setattr(parent, child, pooler)
    return model
