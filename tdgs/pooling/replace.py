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
    if not hasattr(pool, "kernel_size"):
        raise ValueError(f"{where} ({type(pool).__name__}) has no fixed window (kernel_size) for a pooler to take")
    if getattr(pool, "divisor_override", None):
        raise ValueError(
            f"{where} has divisor_override={pool.divisor_override}; the poolers divide by the positions they weigh"
        )
    if getattr(pool, "count_include_pad", False) and _square(pool.padding, "padding", where):
        raise ValueError(
            f"{where} counts its padding (count_include_pad=True); the poolers never weigh padded positions"
        )
    kernel_size = _square(pool.kernel_size, "kernel_size", where)
    stride = _square(pool.stride if pool.stride is not None else pool.kernel_size, "stride", where)
    window = {
        "kernel_size": kernel_size,
        "stride": stride,
        "padding": _square(getattr(pool, "padding", 0), "padding", where),
    }
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
    stride and padding, on the device and in the dtype of the model's parameters. Each pooler
    takes its channel count (and TDGS its position temperatures) from its first input. Returns
    ``model``.

    A pool module that sits in several places (shared) becomes one pooler in all of them; with
    per-channel parameters (mixed, gated, TDGS but ``granularity="layer"``) it must then always see
    the same channel count: its first input fixes it, another is refused.

    Raises ValueError, in one line naming the layer, for a pool a pooler cannot stand in for
    (no fixed window, a non-square one, dilation, ``ceil_mode``, ``return_indices``, an average
    pool counting its padding or with ``divisor_override``) or a bad ``name``/option, before
    anything is replaced.
    """
    from . import create_pooler  # the registry imports this module

    places: dict[int, list[tuple[nn.Module, str, str]]] = {}  # id(pool) -> (parent, attribute, name) of each place
    for prefix, parent in model.named_modules(remove_duplicate=False):
        for child, module in parent._modules.items():  # every alias (named_children() skips repeats)
            if isinstance(module, types):
                places.setdefault(id(module), []).append((parent, child, f"{prefix}.{child}" if prefix else child))
    poolers = {}
    for key, sites in places.items():
        parent, child, where = sites[0]
        poolers[key] = create_pooler(name, **window_of(getattr(parent, child), where), **options)
    like = next((p for p in model.parameters() if p.is_floating_point()), None)  # the model's device and dtype
    for key, sites in places.items():
        pooler = poolers[key] if like is None else poolers[key].to(device=like.device, dtype=like.dtype)
        for parent, child, _ in sites:
            setattr(parent, child, pooler)
    return model
