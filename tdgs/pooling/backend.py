"""Which implementation runs a pooler: one switch, ``TDGS_BACKEND``.

- ``auto`` (default): the compiled C++ kernels for float32/float64 CPU tensors, the Triton kernels
  for float32/float16/bfloat16 CUDA tensors, the pure-PyTorch reference code for anything else.
- ``reference``: always the pure-PyTorch reference code (it defines the results; the kernels are
  tested against it given the same noise).
- ``cpp``: the C++ kernels where they apply (CPU float32/float64), the reference elsewhere.
- ``triton``: the Triton kernels where they apply (float32/float16/bfloat16 on CUDA; on CPU tensors
  with ``TRITON_INTERPRET=1``, Triton's interpreter, which is how the CPU test suite checks them),
  the reference elsewhere.

:func:`use` switches it inside a block (tests, benchmarks). Every kernel draws its randomness from a
64-bit key that :func:`draw_seed` takes from torch's generator on the tensors' device, so
``torch.manual_seed`` keeps runs reproducible and a captured CUDA graph draws a fresh key per replay.

Export (``torch.export``, ``torch.onnx.export``) and ``torch.jit.trace`` always take the reference
code, standard ATen operators that ONNX Runtime and other runtimes serve without this package; a
pooler drawing at random is refused there (:func:`refuse_lowering_samples`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from types import ModuleType

import torch

BACKENDS = ("auto", "reference", "cpp", "triton")
CPP_DTYPES = (torch.float32, torch.float64)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_choice: str | None = None  # set by use(); None: the TDGS_BACKEND environment variable


def check_backend(name: object) -> str:
    if name not in BACKENDS:
        raise ValueError(f"TDGS_BACKEND must be one of {', '.join(map(repr, BACKENDS))}, but got {name!r}")
    return name


def selected() -> str:
    """The backend asked for: :func:`use`'s, else ``TDGS_BACKEND`` (default ``auto``)."""
    if _choice is not None:
        return _choice
    return check_backend(os.environ.get("TDGS_BACKEND", "auto").strip().lower() or "auto")


@contextlib.contextmanager
def use(name: str):
    """Run the poolers with backend ``name`` inside this block."""
    global _choice
    before, _choice = _choice, check_backend(name)
    try:
        yield
    finally:
        _choice = before


def triton_interpreted() -> bool:
    """Whether Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``), on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "yes", "on"}


def kernels_for(*tensors: torch.Tensor, kernel_size: int = 2) -> str | None:
    """The kernels (``"cpp"`` or ``"triton"``) that run a pooler given ``tensors`` (input first, then
    parameters, all on one device), or None for the reference code."""
    x = tensors[0]
    if lowering() or any(t.device != x.device for t in tensors[1:]):
        return None
    return _kernels_for(selected(), x.device.type, x.dtype, kernel_size, triton_interpreted())


def lowering() -> bool:
    """Whether a pooler is being exported (``torch.export``, ``torch.onnx.export``) or traced
    (``torch.jit.trace``): then it runs the reference code, standard ATen operators that every
    runtime serves, instead of this package's kernels."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


# taken as a constant, computed in Python, when torch.compile or a strict export traces it: before torch
# 2.14, dynamo replaced torch.compiler.is_exporting() by True in traced code, under torch.compile too
# (pytorch#176347), which would send compiled models to the reference code and refuse the random poolers
lowering._dynamo_marked_constant = True


def refuse_lowering_samples(pooler: str, why: str = "training=True: call model.eval() first") -> None:
    """Export and tracing take deterministic poolers only: a one-line ValueError, naming what makes
    ``pooler`` sample (``why``), when one about to draw at random is lowered. Called by the reference
    code only, where it draws: the kernels never run while lowering, and given noise draws nothing."""
    if lowering():
        raise ValueError(f"{pooler} cannot be exported or traced while it samples at random ({why})")


def _kernels_for(choice: str, device: str, dtype: torch.dtype, kernel_size: int, interpreted: bool) -> str | None:
    if choice == "reference":
        return None
    if device == "cpu" and choice in ("auto", "cpp"):
        return "cpp" if dtype in CPP_DTYPES and kernel_size <= 8 and module("cpp") is not None else None
    if choice == "cpp" or dtype not in TRITON_DTYPES or device not in ("cuda", "cpu"):
        return None
    if device == "cpu" and not interpreted:
        raise RuntimeError("TDGS_BACKEND=triton runs on CPU tensors only in Triton's interpreter (TRITON_INTERPRET=1)")
    return "triton" if module("triton") is not None else None


# torch.compile takes the decision as a constant while tracing instead of tracing into it; this is
# what torch.compiler.assume_constant_result sets, without importing torch._dynamo (1.5 s) here
_kernels_for._dynamo_marked_constant = True


@functools.cache
def module(name: str) -> ModuleType | None:
    """The kernel module ``name`` (:mod:`.cpp_kernels`, :mod:`.triton_kernels`), or None where it
    cannot load (no C++ compiler, no Triton)."""
    if name == "cpp":
        from . import cpp_kernels

        return cpp_kernels if cpp_kernels.available() else None
    try:
        from . import triton_kernels
    except ImportError:
        return None
    return triton_kernels


def draw_seed(device: torch.device | str = "cpu") -> torch.Tensor:
    """A random 63-bit key for the kernels' counter-based (Philox) stream, drawn on ``device`` from
    torch's generator: no host round trip, so it can be captured in a CUDA graph."""
    return torch.randint(0, 2**63 - 1, (), dtype=torch.int64, device=device)
