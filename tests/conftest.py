"""Shared helpers for the pooler tests.

The Triton kernels run on CUDA tensors where a GPU is present; elsewhere on CPU tensors in Triton's
interpreter (set here, before any kernel is defined), so that CI checks them too.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (`make test`: a worker per core) each worker and the processes it starts run one
# torch thread: the workers already share the cores, and more threads per worker only contend (the
# same suite on 2 cores, 2026-11-26: 8:45 with torch's default threads, 7:16 with one). The C++
# kernels on several threads: test_kernels.py sets them itself.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

from tdgs.pooling import POOLERS, backend  # noqa: E402
from tdgs.pooling.tdgs import gumbel_noise, kernel_gumbels  # noqa: E402

# tdgs-train as a user runs it: the installed console script, or where there is none (a bare
# checkout on a GPU machine, the source tree on PYTHONPATH) the module behind it
_SCRIPT = Path(sys.executable).with_name("tdgs-train")
TRAIN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tdgs.cli"]

ALL_POOLERS = list(POOLERS)
# tdgs-train overrides for a run of seconds: 256 + 128 synthetic images, one epoch, no bars
SMALL_RUN = [
    "dataset=synthetic",
    "dataset.train_size=256",
    "dataset.test_size=128",
    "trainer.epochs=1",
    "trainer.progress=false",
]
RANDOM_POOLERS = ["stochastic", "s3", "tdgs"]
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the Triton kernels run here


def kernel_backends() -> list[str]:
    """The kernel backends this machine runs: cpp (CPU kernels) and triton, where they load."""
    found = []
    with backend.use("auto"):
        if backend.kernels_for(torch.empty(1, 1, 2, 2)) is not None:
            found.append("cpp")
    with backend.use("triton"):
        if backend.kernels_for(torch.empty(1, 1, 2, 2, device=TRITON_DEVICE)) is not None:
            found.append("triton")
    return found


KERNEL_BACKENDS = kernel_backends()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=KERNEL_BACKENDS)
def kernels(request):
    """Run the test with each kernel backend; yields the device whose tensors that backend runs."""
    with backend.use(request.param):
        yield TRITON_DEVICE if request.param == "triton" else "cpu"


BACKENDS = ["reference", *KERNEL_BACKENDS]  # every implementation here; a new backend joins this list


@pytest.fixture(params=BACKENDS)
def backends(request):
    """Run the test with every backend, the pure-PyTorch reference (what TDGS_BACKEND=reference and
    machines without the kernels run) included; yields the device whose tensors it runs."""
    with backend.use(request.param):
        yield TRITON_DEVICE if request.param == "triton" else "cpu"


def compose_config(*overrides):
    """tdgs-train's configuration for ``overrides``, composed in this process (no run folder)."""
    from hydra import compose, initialize_config_dir

    from tdgs.cli import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("config", overrides=list(overrides))


def run_seeded(module, x, seed=0):
    """Forward ``x`` through ``module`` with torch's generator at ``seed``."""
    torch.manual_seed(seed)
    return module(x)


def drawn_gumbels(seed, shape, dtype=torch.float32, device="cpu"):
    """The Gumbel noise a TDGS pooler draws right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    probe = torch.empty((1, 1, 1, 1), dtype=dtype, device=device)
    if backend.kernels_for(probe) is not None:
        return kernel_gumbels(backend.draw_seed(device), shape, dtype)
    return gumbel_noise(shape, dtype=dtype, device=device)
