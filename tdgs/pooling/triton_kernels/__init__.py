"""The Triton kernels behind the poolers on CUDA (and, with ``TRITON_INTERPRET=1``, on CPU tensors
through Triton's interpreter, which is how the CPU test suite checks them).

One launch per pooler and direction (gated's parameter gradients and TDGS's temperature gradient
come out per plane or per window and are summed by one reduction in :mod:`..ops`; S3 draws its
rows and columns, shared by the whole batch, in one small launch before its pooling kernel). TDGS
computes its temperature ``T = rectifier(theta) + eps`` and theta's gradient inside its kernels. Any input layout
(NCHW, channels_last, strided views) is read through its strides; outputs follow the input's memory
format. float32, float16 and bfloat16 inputs; the maths is float32, outputs keep the input's dtype.
Random draws come from the Philox stream keyed by ``seed``, a 0-dim int64 tensor on the device that
the kernels load themselves (no host round trip, so CUDA graphs can capture them).

The functions below have the same signatures as :mod:`..cpp_kernels`; :mod:`..ops` calls them.
"""

from __future__ import annotations

import torch
import triton

from .. import backend
from ..windows import memory_format, pooled_empty, pooled_size
from . import classic, philox, tdgs

NORMALIZE_CODES = {"none": tdgs.NONE.value, "l1": tdgs.L1.value, "l2": tdgs.L2.value, "max": tdgs.MAX.value}
RECTIFIER_CODES = {"none": tdgs.IDENTITY.value, "relu": tdgs.RELU.value, "softplus": tdgs.SOFTPLUS.value}
MODE_CODES = {
    "hard": tdgs.HARD.value,
    "soft": tdgs.SOFT.value,
    "expectation": tdgs.EXPECTATION.value,
    "argmax": tdgs.ARGMAX.value,
}
WARPS = 4
INTERPRETED = backend.triton_interpreted()


def _block(window_pad: int) -> int:
    """Windows per program: 128 for 2x2 windows, fewer for larger ones (a tile of ~512 values).
    Triton's interpreter runs one program at a time in Python: there, far larger blocks."""
    if INTERPRETED:
        return max(16, 8192 // window_pad)
    return max(16, min(128, 512 // window_pad))


def _pad(window: int) -> int:
    return triton.next_power_of_2(window)


def _grad_input(x: torch.Tensor, kernel_size: int, stride: int, padding: int, out_h: int, out_w: int):
    """(buffer for d/dx, whether windows overlap): uninitialised where the windows tile the input
    exactly, zeros where some elements are in no window, float32 zeros where windows overlap
    (atomic adds)."""
    overlap = stride < kernel_size
    exact = stride == kernel_size and padding == 0 and out_h * stride == x.shape[2] and out_w * stride == x.shape[3]
    dtype = torch.float32 if overlap else x.dtype
    buffer = torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=memory_format(x))
    return (buffer if exact else buffer.zero_()), overlap


def _tdgs_constants(kernel_size, stride, normalize, mode, rectifier) -> dict:
    """The compile-time constants both TDGS kernels take (and the launch's block and warps)."""
    pad = _pad(kernel_size * kernel_size)
    return dict(
        K=kernel_size, S=stride, KK_PAD=pad, NORMALIZE=NORMALIZE_CODES[normalize], MODE=MODE_CODES[mode],
        RECTIFIER=RECTIFIER_CODES[rectifier], BLOCK=_block(pad), num_warps=WARPS,
    )  # fmt: skip


def tdgs_forward(x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps):
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    out = pooled_empty(x, out_h, out_w)
    windows = out.numel()
    if windows == 0:
        return out
    t = theta.expand(x.shape[1], out_h, out_w)  # (C, Ho, Wo), broadcast dimensions of stride 0
    constants = _tdgs_constants(kernel_size, stride, normalize, mode, rectifier)
    tdgs.tdgs_forward_kernel[(triton.cdiv(windows, constants["BLOCK"]),)](
        x, t, seed, out, windows, *x.shape[1:], padding, out_h, out_w,
        *x.stride(), *t.stride(), *out.stride(), float(eps), **constants,
    )  # fmt: skip
    return out


def tdgs_backward(grad, x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps):
    """(d/dx, d/dtheta per window: float32 (B, C, Ho, Wo))."""
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    grad_x, overlap = _grad_input(x, kernel_size, stride, padding, out_h, out_w)
    grad_t = torch.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=torch.float32, device=x.device)
    windows = grad_t.numel()
    if windows:
        t = theta.expand(x.shape[1], out_h, out_w)
        constants = _tdgs_constants(kernel_size, stride, normalize, mode, rectifier)
        tdgs.tdgs_backward_kernel[(triton.cdiv(windows, constants["BLOCK"]),)](
            grad, x, t, seed, grad_x, grad_t, windows, *x.shape[1:], padding, out_h, out_w,
            *x.stride(), *t.stride(), *grad.stride(), *grad_x.stride(), float(eps), OVERLAP=overlap, **constants,
        )  # fmt: skip
    return grad_x.to(x.dtype), grad_t


def window_uniforms(seed, windows: int, window_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (windows, k*k) uniforms of the stream ``seed`` (a 0-dim int64 tensor), on its device."""
    if dtype != torch.float32:
        raise ValueError(f"the Triton kernels draw float32 uniforms, but got dtype={dtype}")
    out = torch.empty((windows, window_size), dtype=torch.float32, device=seed.device)
    pad = _pad(window_size)
    block = _block(pad)
    philox.window_uniforms_kernel[(triton.cdiv(windows, block),)](
        seed, out, windows, WINDOW=window_size, KK_PAD=pad, BLOCK=block
    )
    return out


def _grid(windows: int, block: int) -> tuple[int]:
    return (triton.cdiv(windows, block),)


def gated_forward(x, mask, bias, kernel_size, stride, padding):
    """Mixed pooling is the case ``mask=None``."""
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    out = pooled_empty(x, out_h, out_w)
    windows = out.numel()
    if windows:
        mask_rows, bias_rows = _gate_views(x, mask, bias)
        pad = _pad(kernel_size * kernel_size)
        block = _block(pad)
        classic.gated_forward_kernel[_grid(windows, block)](
            x,
            mask_rows,
            bias_rows,
            out,
            windows,
            *x.shape[1:],
            padding,
            out_h,
            out_w,
            *x.stride(),
            *mask_rows.stride(),
            *bias_rows.stride(),
            *out.stride(),
            K=kernel_size,
            S=stride,
            KK_PAD=pad,
            HAS_MASK=mask is not None,
            BLOCK=block,
            num_warps=WARPS,
        )
    return out


def _gate_views(x, mask, bias):
    """(mask, bias) as per-channel views (C, k*k) and (C,), stride 0 where shared; without a mask,
    the bias stands in for it (never read)."""
    channels = x.shape[1]
    bias_rows = bias.reshape(-1).expand(channels)
    return (bias_rows.view(channels, 1) if mask is None else mask.expand(channels, -1)), bias_rows


def gated_backward(grad, x, mask, bias, kernel_size, stride, padding):
    """(d/dx, float32 per plane (B*C, k*k + 1): d/dmask and, last, d/dbias; (B*C, 1) without a mask)."""
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    grad_x, overlap = _grad_input(x, kernel_size, stride, padding, out_h, out_w)
    columns = 1 if mask is None else kernel_size * kernel_size + 1
    per_plane = torch.empty((x.shape[0] * x.shape[1], columns), dtype=torch.float32, device=x.device)
    if per_plane.shape[0] and out_h * out_w:
        mask_rows, bias_rows = _gate_views(x, mask, bias)
        pad = _pad(kernel_size * kernel_size)
        block = min(_block(pad), triton.next_power_of_2(out_h * out_w))
        classic.gated_backward_kernel[(per_plane.shape[0],)](
            grad,
            x,
            mask_rows,
            bias_rows,
            grad_x,
            per_plane,
            *x.shape[1:],
            padding,
            out_h,
            out_w,
            *x.stride(),
            *mask_rows.stride(),
            *bias_rows.stride(),
            *grad.stride(),
            *grad_x.stride(),
            K=kernel_size,
            S=stride,
            KK_PAD=pad,
            HAS_MASK=mask is not None,
            OVERLAP=overlap,
            BLOCK=max(block, 16),
            num_warps=WARPS,
        )
    return grad_x.to(x.dtype), per_plane


def stochastic_forward(x, seed, kernel_size, stride, padding, training):
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    out = pooled_empty(x, out_h, out_w)
    windows = out.numel()
    if windows:
        pad = _pad(kernel_size * kernel_size)
        block = _block(pad)
        classic.stochastic_forward_kernel[_grid(windows, block)](
            x,
            seed,
            out,
            windows,
            *x.shape[1:],
            padding,
            out_h,
            out_w,
            *x.stride(),
            *out.stride(),
            K=kernel_size,
            S=stride,
            KK_PAD=pad,
            TRAINING=training,
            BLOCK=block,
            num_warps=WARPS,
        )
    return out


def stochastic_backward(grad, x, seed, kernel_size, stride, padding, training):
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    grad_x, overlap = _grad_input(x, kernel_size, stride, padding, out_h, out_w)
    windows = grad.numel()
    if windows:
        pad = _pad(kernel_size * kernel_size)
        block = _block(pad)
        classic.stochastic_backward_kernel[_grid(windows, block)](
            grad,
            x,
            seed,
            grad_x,
            windows,
            *x.shape[1:],
            padding,
            out_h,
            out_w,
            *x.stride(),
            *grad.stride(),
            *grad_x.stride(),
            K=kernel_size,
            S=stride,
            KK_PAD=pad,
            TRAINING=training,
            OVERLAP=overlap,
            BLOCK=block,
            num_warps=WARPS,
        )
    return grad_x.to(x.dtype)


def _s3_lines(x, seed, kernel_size, stride, padding, grid_size, training):
    """The drawn rows then columns of the (H + p) x (W + p) max map, (Ho + Wo,) int64, in training (one small
    launch); the key itself in evaluation, which reads none."""
    if not training:
        return seed
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    lines = torch.empty(out_h + out_w, dtype=torch.int64, device=x.device)
    block = _block(_pad(grid_size) ** 2)
    philox.s3_lines_kernel[_grid(out_h + out_w, block)](
        seed,
        lines,
        x.shape[2] + padding,
        x.shape[3] + padding,
        out_h,
        out_w,
        GRID=grid_size,
        PER_BLOCK=grid_size // stride,
        G_PAD=_pad(grid_size),
        BLOCK=block,
    )
    return lines


def s3_forward(x, seed, kernel_size, stride, padding, grid_size, training):
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    out = pooled_empty(x, out_h, out_w)
    windows = out.numel()
    if windows:
        lines = _s3_lines(x, seed, kernel_size, stride, padding, grid_size, training)
        pad = _pad(kernel_size * kernel_size)
        block = _block(pad)
        classic.s3_forward_kernel[_grid(windows, block)](
            x,
            lines,
            out,
            windows,
            *x.shape[1:],
            padding,
            out_h,
            out_w,
            *x.stride(),
            *out.stride(),
            K=kernel_size,
            S=stride,
            KK_PAD=pad,
            TRAINING=training,
            BLOCK=block,
            num_warps=WARPS,
        )
    return out


def s3_backward(grad, x, seed, kernel_size, stride, padding, grid_size, training):
    out_h, out_w = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    grad_x = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=memory_format(x)).zero_()
    windows = grad.numel()
    if windows:
        lines = _s3_lines(x, seed, kernel_size, stride, padding, grid_size, training)  # drawn again from the key
        pad = _pad(kernel_size * kernel_size)
        block = _block(pad)
        classic.s3_backward_kernel[_grid(windows, block)](
            grad,
            x,
            lines,
            grad_x,
            windows,
            *x.shape[1:],
            padding,
            out_h,
            out_w,
            *x.stride(),
            *grad.stride(),
            *grad_x.stride(),
            K=kernel_size,
            S=stride,
            KK_PAD=pad,
            TRAINING=training,
            BLOCK=block,
            num_warps=WARPS,
        )
    return grad_x.to(x.dtype)


def s3_lines(seed, size: int, count: int, grid_size: int, per_block: int, axis: int) -> torch.Tensor:
    """The ``count`` sorted rows (``axis=0``) or columns (1) S3 keeps for key ``seed``, shape (count,)."""
    other = 1  # the draw of the other axis, from a one-line map, is made too and dropped
    sizes, counts = ((size, other), (count, other)) if axis == 0 else ((other, size), (other, count))
    lines = torch.empty(count + other, dtype=torch.int64, device=seed.device)
    block = _block(_pad(grid_size) ** 2)
    philox.s3_lines_kernel[_grid(count + other, block)](
        seed, lines, *sizes, *counts, GRID=grid_size, PER_BLOCK=per_block, G_PAD=_pad(grid_size), BLOCK=block
    )
    return lines[:count] if axis == 0 else lines[other:]
