"""The Triton kernels compile for a real GPU (sm_90), checked without one: Triton's interpreter,
which runs them in the other tests, never compiles (see compile_for_gpu.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("compile_for_gpu.py")
ROOT = Path(__file__).resolve().parents[1]


def _compile(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=1800)


def test_every_kernel_compiles_for_a_gpu():
    """One specialisation of every kernel and branch the deck's CNN uses (float32, 2x2 windows)."""
    done = _compile()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_every_kernel_specialisation_compiles_for_a_gpu():
    """Every dtype, window geometry, normalisation, mode and rectifier (about 1,000; minutes)."""
    done = _compile("--all")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
