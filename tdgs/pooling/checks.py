"""Argument checks shared by the poolers: each raises a one-line ValueError naming the option,
what is allowed and what was given."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .windows import pooled_size


def check_choice(name: str, value: object, allowed: Sequence[object]) -> object:
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, but got {value!r}")
    return value


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, but got {value!r}")
    return value


def check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, but got {value!r}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, but got {value!r}")
    return value


def check_window(
    kernel_size: object, stride: object, padding: object, dilation: object, ceil_mode: object
) -> tuple[int, int, int]:
    """``nn.MaxPool2d``'s window arguments as the poolers take them: (kernel_size, stride, padding),
    positive integers and a padding of at most half the window; no dilation, no ceil_mode."""
    kernel_size = check_positive_int("kernel_size", kernel_size)
    stride = check_positive_int("stride", stride)
    if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= kernel_size // 2:
        raise ValueError(
            f"padding must be an integer from 0 to kernel_size // 2 = {kernel_size // 2}, but got {padding!r}"
        )
    if dilation != 1:
        raise ValueError(f"dilation must be 1 (the poolers do not dilate their windows), but got {dilation!r}")
    if ceil_mode is not False:
        raise ValueError(f"ceil_mode must be False (windows never start in the padding), but got {ceil_mode!r}")
    return kernel_size, stride, padding


def check_input(x: torch.Tensor, kernel_size: int, stride: int, padding: int) -> tuple[int, int]:
    """That ``x`` is a (B, C, H, W) batch a ``kernel_size`` x ``kernel_size``, ``stride``, ``padding``
    pooling can take: its output size (Ho, Wo), or a one-line ValueError."""
    if x.dim() != 4:
        raise ValueError(f"input must have shape (B, C, H, W), but got shape {tuple(x.shape)}")
    check_window(kernel_size, stride, padding, 1, False)
    return pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
