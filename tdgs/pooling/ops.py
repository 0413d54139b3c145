"""The pooling kernels as PyTorch operators: ``torch.ops.tdgs.<pooler>_pool`` and
``<pooler>_pool_backward`` for tdgs, gated (and mixed), stochastic and s3, registered with
:mod:`torch.library` (a fake implementation for shapes, an autograd formula), so that
``torch.compile`` keeps the fast kernels in its graphs. The implementation behind an operator is
the C++ or the Triton kernel, as :func:`.backend.kernels_for` picks for the input.

Outside ``torch.compile`` the poolers call the same kernels and the same autograd formulas through
an ``autograd.Function`` instead: going through the operator dispatcher costs ~40 us per call in
Python, a tenth of a small CNN's training step on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import backend
from .windows import memory_format, pooled_empty, pooled_size


def _kernels(x: Tensor):
    name = backend.kernels_for(x)
    if name is None:
        raise RuntimeError(
            f"no TDGS pooling kernel runs {x.dtype} tensors on {x.device} with TDGS_BACKEND={backend.selected()}"
        )
    return backend.module(name)


def _pooled_fake(x: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
    """The output every kernel returns: (B, C, Ho, Wo), ``x``'s dtype and memory format."""
    return pooled_empty(x, *pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding))


def _input_grad_fake(x: Tensor) -> Tensor:
    """d/dx as every kernel returns it: ``x``'s shape, dtype and memory format."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))


def _parameter_grad_dtype(x: Tensor) -> torch.dtype:
    """The dtype of the per-window (TDGS) or per-plane (gated) parameter gradients: the input's
    for the C++ kernels, float32 for the Triton kernels."""
    return x.dtype if backend.kernels_for(x) == "cpp" else torch.float32


def _per_window_grad_fake(x: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
    """TDGS's d/dtheta per window, (B, C, Ho, Wo)."""
    height, width = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    return torch.empty((x.shape[0], x.shape[1], height, width), dtype=_parameter_grad_dtype(x), device=x.device)


# ---- TDGS --------------------------------------------------------------------------------------


@torch.library.custom_op("tdgs::tdgs_pool", mutates_args=())
def tdgs_pool(
    x: Tensor,
    theta: Tensor,
    seed: Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    normalize: str,
    mode: str,
    rectifier: str,
    eps: float,
) -> Tensor:
    """TDGS pooling with the temperature ``T = rectifier(theta) + eps`` (``rectifier`` ``none``,
    ``relu`` or ``softplus``); ``mode``: ``hard``/``soft`` (samples with key ``seed``),
    ``expectation``, ``argmax``."""
    return _kernels(x).tdgs_forward(x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps)


@tdgs_pool.register_fake
def _(x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps):
    return _pooled_fake(x, kernel_size, stride, padding)


@torch.library.custom_op("tdgs::tdgs_pool_backward", mutates_args=())
def tdgs_pool_backward(
    grad: Tensor,
    x: Tensor,
    theta: Tensor,
    seed: Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    normalize: str,
    mode: str,
    rectifier: str,
    eps: float,
) -> tuple[Tensor, Tensor]:
    """(d/dx, d/dtheta of every window, (B, C, Ho, Wo)), regenerating the forward pass's noise from ``seed``."""
    return _kernels(x).tdgs_backward(
        grad, x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps
    )


@tdgs_pool_backward.register_fake
def _(grad, x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps):
    return _input_grad_fake(x), _per_window_grad_fake(x, kernel_size, stride, padding)


def _tdgs_setup(ctx, inputs, output) -> None:
    x, theta, seed, *options = inputs
    ctx.save_for_backward(x, theta, seed)
    ctx.options = options


def _tdgs_backward(ctx, grad):
    x, theta, seed = ctx.saved_tensors
    grad_x, per_window = ctx.backward(grad, x, theta, seed, *ctx.options)
    grad_theta = None
    if ctx.wants[1]:  # summed over the batch and wherever theta is broadcast, in one reduction
        shape = (1,) * (4 - theta.dim()) + tuple(theta.shape)
        grad_theta = per_window.sum_to_size(shape).view(theta.shape).to(theta.dtype)
    return grad_x, grad_theta, *(None,) * (1 + len(ctx.options))


# ---- gated and mixed ---------------------------------------------------------------------------


@torch.library.custom_op("tdgs::gated_pool", mutates_args=())
def gated_pool(x: Tensor, mask: Tensor | None, bias: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
    """Gated pooling with ``mask`` (R, k*k) and ``bias`` (R,), R = C or 1; mixed pooling without a mask."""
    return _kernels(x).gated_forward(x, mask, bias, kernel_size, stride, padding)


@gated_pool.register_fake
def _(x, mask, bias, kernel_size, stride, padding):
    return _pooled_fake(x, kernel_size, stride, padding)


@torch.library.custom_op("tdgs::gated_pool_backward", mutates_args=())
def gated_pool_backward(
    grad: Tensor, x: Tensor, mask: Tensor | None, bias: Tensor, kernel_size: int, stride: int, padding: int
) -> tuple[Tensor, Tensor]:
    """(d/dx, per plane (B*C, k*k + 1): d/dmask summed over the plane and, last, d/dbias; (B*C, 1)
    without a mask)."""
    return _kernels(x).gated_backward(grad, x, mask, bias, kernel_size, stride, padding)


@gated_pool_backward.register_fake
def _(grad, x, mask, bias, kernel_size, stride, padding):
    columns = 1 if mask is None else kernel_size * kernel_size + 1
    return _input_grad_fake(x), x.new_empty((x.shape[0] * x.shape[1], columns), dtype=_parameter_grad_dtype(x))


def _gated_setup(ctx, inputs, output) -> None:
    x, mask, bias, *options = inputs
    ctx.save_for_backward(x, mask, bias)
    ctx.options = options


def _gated_backward(ctx, grad):
    x, mask, bias = ctx.saved_tensors
    grad_x, per_plane = ctx.backward(grad, x, mask, bias, *ctx.options)
    rows = max(1 if mask is None else mask.shape[0], bias.numel())
    columns = per_plane.shape[1]
    per_row = per_plane.view(x.shape[0], x.shape[1], columns).sum_to_size(1, rows, columns)[0]  # (R, k*k + 1)
    grad_mask = None if mask is None else per_row[:, :-1].sum_to_size(mask.shape).to(mask.dtype)
    grad_bias = per_row[:, -1].sum_to_size(bias.shape).to(bias.dtype)
    return grad_x, grad_mask, grad_bias, *(None,) * len(ctx.options)


# ---- stochastic --------------------------------------------------------------------------------


@torch.library.custom_op("tdgs::stochastic_pool", mutates_args=())
def stochastic_pool(x: Tensor, seed: Tensor, kernel_size: int, stride: int, padding: int, training: bool) -> Tensor:
    """Stochastic pooling: a value drawn with probability proportional to it (training, key ``seed``),
    or the probability-weighted mean (evaluation)."""
    return _kernels(x).stochastic_forward(x, seed, kernel_size, stride, padding, training)


@stochastic_pool.register_fake
def _(x, seed, kernel_size, stride, padding, training):
    return _pooled_fake(x, kernel_size, stride, padding)


@torch.library.custom_op("tdgs::stochastic_pool_backward", mutates_args=())
def stochastic_pool_backward(
    grad: Tensor, x: Tensor, seed: Tensor, kernel_size: int, stride: int, padding: int, training: bool
) -> Tensor:
    return _kernels(x).stochastic_backward(grad, x, seed, kernel_size, stride, padding, training)


@stochastic_pool_backward.register_fake
def _(grad, x, seed, kernel_size, stride, padding, training):
    return _input_grad_fake(x)


def _input_only_setup(ctx, inputs, output) -> None:
    x, seed, *options = inputs
    ctx.save_for_backward(x, seed)
    ctx.options = options


def _input_only_backward(ctx, grad):
    x, seed = ctx.saved_tensors
    return ctx.backward(grad, x, seed, *ctx.options), *(None,) * (1 + len(ctx.options))


# ---- S3 ----------------------------------------------------------------------------------------


@torch.library.custom_op("tdgs::s3_pool", mutates_args=())
def s3_pool(
    x: Tensor, seed: Tensor, kernel_size: int, stride: int, padding: int, grid_size: int, training: bool
) -> Tensor:
    """S3Pool: stride-1 max pooling, then the rows and columns drawn with key ``seed`` (training) or
    average pooling (evaluation)."""
    return _kernels(x).s3_forward(x, seed, kernel_size, stride, padding, grid_size, training)


@s3_pool.register_fake
def _(x, seed, kernel_size, stride, padding, grid_size, training):
    return _pooled_fake(x, kernel_size, stride, padding)


@torch.library.custom_op("tdgs::s3_pool_backward", mutates_args=())
def s3_pool_backward(
    grad: Tensor, x: Tensor, seed: Tensor, kernel_size: int, stride: int, padding: int, grid_size: int, training: bool
) -> Tensor:
    return _kernels(x).s3_backward(grad, x, seed, kernel_size, stride, padding, grid_size, training)


@s3_pool_backward.register_fake
def _(grad, x, seed, kernel_size, stride, padding, grid_size, training):
    return _input_grad_fake(x)


# ---- autograd, for the operators and for the eager path ----------------------------------------


@dataclass(frozen=True)
class Pooling:
    """One pooler's operators, kernel functions and autograd formula."""

    op: Callable  # the registered forward operator
    backward_op: Callable  # the registered backward operator
    forward: str  # name of the kernel modules' forward function
    backward: str  # ... and of their backward function
    setup: Callable  # saves what the backward pass needs (register_autograd's setup_context)
    formula: Callable  # the backward pass: gradients of every input (ctx.wants: which are needed)


TDGS = Pooling(tdgs_pool, tdgs_pool_backward, "tdgs_forward", "tdgs_backward", _tdgs_setup, _tdgs_backward)
GATED = Pooling(gated_pool, gated_pool_backward, "gated_forward", "gated_backward", _gated_setup, _gated_backward)
STOCHASTIC = Pooling(
    stochastic_pool,
    stochastic_pool_backward,
    "stochastic_forward",
    "stochastic_backward",
    _input_only_setup,
    _input_only_backward,
)
S3 = Pooling(s3_pool, s3_pool_backward, "s3_forward", "s3_backward", _input_only_setup, _input_only_backward)


def _register(pooling: Pooling) -> None:
    def setup(ctx, inputs, output):
        pooling.setup(ctx, inputs, output)
        ctx.backward = pooling.backward_op

    def formula(ctx, grad):
        ctx.wants = ctx.needs_input_grad  # which inputs need a gradient
        return pooling.formula(ctx, grad)

    pooling.op.register_autograd(formula, setup_context=setup)


for _pooling in (TDGS, GATED, STOCHASTIC, S3):
    _register(_pooling)


class _Eager(torch.autograd.Function):
    """A pooling operator's kernels and formula without the dispatcher (see the module docstring)."""

    @staticmethod
    def forward(ctx, pooling: Pooling, kernels, *inputs):
        output = getattr(kernels, pooling.forward)(*inputs)
        pooling.setup(ctx, inputs, output)
        ctx.backward = getattr(kernels, pooling.backward)
        ctx.formula = pooling.formula
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        ctx.wants = ctx.needs_input_grad[2:]  # the pooling's own inputs
        return None, None, *ctx.formula(ctx, grad)


def apply(pooling: Pooling, kernels: str, *inputs) -> Tensor:
    """Run ``pooling`` with the kernels ``kernels`` (``"cpp"`` or ``"triton"``, from
    :func:`.backend.kernels_for`)."""
    if torch.compiler.is_compiling():
        return pooling.op(*inputs)
    return _Eager.apply(pooling, backend.module(kernels), *inputs)


_NO_SEEDS: dict[torch.device, Tensor] = {}


def no_seed(device: torch.device) -> Tensor:
    """The key passed to kernels that draw nothing (evaluation modes): one constant tensor per device."""
    if torch.compiler.is_compiling():
        return torch.zeros((), dtype=torch.int64, device=device)
    if device not in _NO_SEEDS:
        _NO_SEEDS[device] = torch.zeros((), dtype=torch.int64, device=device)
    return _NO_SEEDS[device]
