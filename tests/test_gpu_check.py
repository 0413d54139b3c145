"""scripts/gpu_check.sh runs end to end: a smoke run on the CPU (DEVICE=cpu QUICK=1), since the GPU
it is written for is rarely at hand. Slow (about 3 minutes): `make test-all` runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_run_writes_the_summary(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "PYTHON": sys.executable}
    env["ALONGSIDE"] = f"sleep 1; echo ran > {tmp_path / 'alongside.txt'}"  # finished before the benchmark starts
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert (steps.exit_code == 0).all() and {"tests", "bench", "e2e_tdgs", "e2e_max"} <= set(steps.step)
    order = steps.step.tolist()
    assert order.index("alongside") < order.index("bench") and (tmp_path / "alongside.txt").read_text() == "ran\n"
    summary = (tmp_path / "summary.md").read_text()
    for title in ("## Poolers", "## CNN train step", "## Peak memory", "## Train step per recipe", "## Trainings",
                  "End to end: TDGS"):  # fmt: skip
        assert title in summary
    for precision in ("32", "bf16-mixed", "16-mixed"):
        assert f"train/train_{precision}_none" in summary
