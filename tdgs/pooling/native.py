"""The compiled CPU kernels behind the poolers (``csrc/``), built on first use.

The kernels are C++ (one pass per window, SIMD over windows, no unfold copies), compiled for this
machine with :func:`torch.utils.cpp_extension.load` the first time a pooler runs on the CPU (about
11 s here, cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``). Each pooler
function uses them for float32/float64 CPU tensors and otherwise (CUDA, other dtypes, inside
``torch.compile``, explicit Gumbel noise, no C++ compiler) runs its pure-PyTorch reference code,
which defines the results: tests check that both agree given the same noise.

Set ``TDGS_NATIVE=0`` (or use :func:`disabled`) to always run the reference code.
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

log = logging.getLogger(__name__)

SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cpp"))
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
MAX_KERNEL_SIZE = 8  # the kernels hold a window of up to 8 x 8 values
_disabled = os.environ.get("TDGS_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}


def _machine_tag() -> str:
    """A short hash of this CPU's model and flags: builds with -march=native differ per CPU, so a home
    directory shared by different cluster nodes keeps one build per kind of CPU."""
    text = platform.machine()
    with contextlib.suppress(OSError):
        text += "".join(
            line for line in Path("/proc/cpuinfo").read_text().splitlines()[:40] if line.startswith(("model name", "flags"))
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
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"tdgs: could not build the CPU pooling kernels ({reason}); using the slower pure-PyTorch "
            "poolers (set TDGS_NATIVE=0 to skip the build)",
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
    """Whether the compiled kernels are enabled and load (building them if needed)."""
    return not _disabled and _load()


def usable(*tensors: torch.Tensor, kernel_size: int = 2) -> bool:
    """Whether a pooler given ``tensors`` should run the compiled kernels."""
    if _disabled or kernel_size > MAX_KERNEL_SIZE or torch.compiler.is_compiling():
        return False
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    if any(t.device.type != "cpu" or t.dtype != dtype for t in tensors):
        return False
    return _load()


@contextlib.contextmanager
def disabled():
    """Run the pure-PyTorch reference code inside this block (tests, benchmarks)."""
    global _disabled
    before, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = before


def draw_seed(device: torch.device | str = "cpu") -> int:
    """A 64-bit key for the kernels' counter-based stream, drawn from torch's generator (so
    ``torch.manual_seed`` makes every pooler reproducible)."""
    return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, device=device))


def ops():
    """The kernels' operators, ``torch.ops.tdgs`` (built and loaded if needed)."""
    if not _load():
        raise RuntimeError("the compiled TDGS pooling kernels are not available on this machine")
    return torch.ops.tdgs
