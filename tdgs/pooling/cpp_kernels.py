"""The compiled CPU kernels behind the poolers (``csrc/``), built on first use.

The kernels are C++ (one pass per window, SIMD over windows, no unfold copies), compiled for this
machine with :func:`torch.utils.cpp_extension.load` the first time a pooler runs on the CPU (about
11 s here, cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``). They
run float32/float64 CPU tensors; :mod:`.backend` decides when. Without a C++ compiler the build
fails once with a warning and the reference code runs instead.

The functions below are the kernel interface :mod:`.ops` calls; :mod:`.triton_kernels` has the
same functions. Random draws come from a counter-based Philox stream keyed by ``seed`` (a 0-dim
int64 tensor), so that a backward pass regenerates its forward pass's noise.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import describe
from .windows import memory_format, pooled_size

log = logging.getLogger(__name__)

SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cpp"))
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
NORMALIZE_CODES = {"none": 0, "l1": 1, "l2": 2, "max": 3}
MODE_CODES = {"hard": 0, "soft": 1, "expectation": 2, "argmax": 3}


def _machine_tag() -> str:
    """A short hash of this CPU's model and flags: builds with -march=native differ per CPU, so a home
    directory shared by different cluster nodes keeps one build per kind of CPU."""
    text = platform.machine()
    with contextlib.suppress(OSError):
        text += "".join(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()[:40]
            if line.startswith(("model name", "flags"))
        )
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@functools.cache
def _load() -> bool:
    """Build (once per machine and source version) and load the kernels; False if that fails."""
    if platform.system() != "Linux" or platform.machine() not in {"x86_64", "AMD64", "aarch64"}:
        return False
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" noise
    from torch.utils import cpp_extension

    name = f"tdgs_pooling_{_machine_tag()}"
    log.info("loading the TDGS CPU pooling kernels (compiled on first use, about 10-20 s)")
    saved_path = os.environ.get("PATH", "")
    try:
        # the ninja that pip installed beside this interpreter, even when the venv is not activated
        os.environ["PATH"] = os.pathsep.join([_ninja_dir(), str(Path(sys.executable).parent), saved_path])
        cpp_extension.load(
            name=name,
            sources=[str(path) for path in SOURCES],
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as error:  # no compiler, no ninja, ...: the reference code still works
        reason = describe(error)
        warnings.warn(
            f"tdgs: could not build the CPU pooling kernels ({reason}); using the slower pure-PyTorch "
            "poolers (set TDGS_BACKEND=reference to skip the build)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    finally:
        os.environ["PATH"] = saved_path
    return True


def _ninja_dir() -> str:
    try:
        import ninja
    except ImportError:
        return ""
    return ninja.BIN_DIR


def available() -> bool:
    """Whether the compiled kernels load (building them if needed)."""
    return _load()


def _ops():
    if not _load():
        raise RuntimeError("the compiled TDGS pooling kernels are not available on this machine")
    return torch.ops.tdgs_cpu


def _like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` (contiguous) in ``x``'s memory format, as every kernel returns it."""
    return out if x.is_contiguous() else out.contiguous(memory_format=memory_format(x))


def _padded(x: torch.Tensor, padding: int) -> torch.Tensor:
    """``x`` contiguous, with ``padding`` lines of zeros on every side (the kernels see those
    positions as padding: never picked, no weight)."""
    return F.pad(x, (padding,) * 4).contiguous() if padding else x.contiguous()


def _unpadded(grad_x: torch.Tensor, x: torch.Tensor, padding: int) -> torch.Tensor:
    """The gradient of ``x`` from that of its padded copy."""
    if padding:
        grad_x = grad_x[..., padding:-padding, padding:-padding]
    return _like(grad_x.contiguous(), x)


def _temperature(x, theta, rectifier, eps, kernel_size, stride, padding):
    """(T, dT/dtheta), each as (C, Ho, Wo) views in ``x``'s dtype, for ``T = rectifier(theta) + eps``."""
    height, width = pooled_size(x.shape[2], x.shape[3], kernel_size, stride, padding)
    theta = theta.to(x.dtype).expand(x.shape[1], height, width)  # (C, Ho, Wo), a view
    if rectifier == "relu":
        return theta.clamp_min(0) + eps, (theta > 0).to(x.dtype)
    if rectifier == "softplus":
        return F.softplus(theta) + eps, torch.sigmoid(theta)
    return theta + eps if eps else theta, None


def tdgs_forward(x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps):
    temperature, _ = _temperature(x, theta, rectifier, eps, kernel_size, stride, padding)
    codes = (NORMALIZE_CODES[normalize], MODE_CODES[mode])
    out = _ops().tdgs_forward(_padded(x, padding), temperature, int(seed), kernel_size, stride, padding, *codes)
    return _like(out, x)


def tdgs_backward(grad, x, theta, seed, kernel_size, stride, padding, normalize, mode, rectifier, eps):
    """(d/dx, d/dtheta per window (B, C, Ho, Wo))."""
    temperature, slope = _temperature(x, theta, rectifier, eps, kernel_size, stride, padding)
    codes = (NORMALIZE_CODES[normalize], MODE_CODES[mode])
    grad_x, grad_t = _ops().tdgs_backward(
        grad.contiguous(), _padded(x, padding), temperature, int(seed), kernel_size, stride, padding, *codes
    )
    return _unpadded(grad_x, x, padding), grad_t if slope is None else grad_t * slope


def _gate_parameters(x, mask, bias, kernel_size):
    """(mask, bias) as the kernel takes them: (R, k*k) and (R,) in ``x``'s dtype, R = C or 1; a
    missing mask (mixed pooling) is a zero one."""
    rows = max(1 if mask is None else mask.shape[0], bias.numel())  # a shared mask or bias broadcasts
    if mask is None:
        mask = x.new_zeros(rows, kernel_size * kernel_size)
    return mask.to(x.dtype).expand(rows, -1).contiguous(), bias.to(x.dtype).reshape(-1).expand(rows).contiguous()


def gated_forward(x, mask, bias, kernel_size, stride, padding):
    """Mixed pooling is the case ``mask=None`` (a zero mask)."""
    mask, bias = _gate_parameters(x, mask, bias, kernel_size)
    return _like(_ops().gated_forward(_padded(x, padding), mask, bias, kernel_size, stride, padding), x)


def gated_backward(grad, x, mask, bias, kernel_size, stride, padding):
    """(d/dx, per plane (B*C, k*k + 1): the sums of d/dmask and, last, d/dbias; (B*C, 1) without a mask)."""
    has_mask = mask is not None
    mask, bias = _gate_parameters(x, mask, bias, kernel_size)
    grad_x, per_plane = _ops().gated_backward(
        grad.contiguous(), _padded(x, padding), mask, bias, kernel_size, stride, padding
    )
    return _unpadded(grad_x, x, padding), per_plane if has_mask else per_plane[:, -1:].contiguous()


def stochastic_forward(x, seed, kernel_size, stride, padding, training):
    """Padding with zeros is exact here: a 0 weighs nothing, as padding must."""
    return _like(_ops().stochastic_forward(_padded(x, padding), int(seed), kernel_size, stride, training), x)


def stochastic_backward(grad, x, seed, kernel_size, stride, padding, training):
    grad_x = _ops().stochastic_backward(
        grad.contiguous(), _padded(x, padding), int(seed), kernel_size, stride, training
    )
    return _unpadded(grad_x, x, padding)


def _s3_geometry(height, width, seed, kernel_size, stride, padding, grid_size, training):
    """(rows, cols, repeat, Ho, Wo) of the S3 kernels on the (H + p) x (W + p) map: the sampled
    lines in training, every line of the first Ho * stride (Wo * stride) in evaluation (those past
    the map's edge count for nothing)."""
    out_h, out_w = pooled_size(height, width, kernel_size, stride, padding)
    if not training:
        return torch.arange(out_h * stride), torch.arange(out_w * stride), stride, out_h, out_w
    rows = s3_lines(seed, height + padding, out_h, grid_size, grid_size // stride, 0)
    cols = s3_lines(seed, width + padding, out_w, grid_size, grid_size // stride, 1)
    return rows, cols, 1, out_h, out_w


def _top_left_padded(x: torch.Tensor, padding: int) -> torch.Tensor:
    """``x`` contiguous, with ``padding`` lines of -inf above and left of it: where S3's windows may
    start (the kernels clip windows at the other edges)."""
    return F.pad(x, (padding, 0, padding, 0), value=float("-inf")).contiguous() if padding else x.contiguous()


def s3_forward(x, seed, kernel_size, stride, padding, grid_size, training):
    rows, cols, repeat, out_h, out_w = _s3_geometry(
        *x.shape[2:], seed, kernel_size, stride, padding, grid_size, training
    )
    out = _ops().s3_forward(_top_left_padded(x, padding), rows, cols, kernel_size, repeat, out_h, out_w)
    return _like(out, x)


def s3_backward(grad, x, seed, kernel_size, stride, padding, grid_size, training):
    rows, cols, repeat, _, _ = _s3_geometry(*x.shape[2:], seed, kernel_size, stride, padding, grid_size, training)
    grad_x = _ops().s3_backward(grad.contiguous(), _top_left_padded(x, padding), rows, cols, kernel_size, repeat)
    return _like(grad_x[..., padding:, padding:].contiguous(), x)


def window_uniforms(seed, windows: int, window_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (windows, k*k) uniforms of the stream ``seed`` (tests rebuild the kernels' noise)."""
    return _ops().window_uniforms(int(seed), windows, window_size, dtype)


def s3_lines(seed, size: int, count: int, grid_size: int, per_block: int, axis: int) -> torch.Tensor:
    """The ``count`` sorted rows (``axis=0``) or columns (1) S3 keeps for key ``seed``, shape (count,)."""
    return _ops().s3_lines(int(seed), size, count, grid_size, per_block, axis)
