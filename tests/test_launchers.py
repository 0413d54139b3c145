"""Sweeps through Hydra's launcher plugins: local parallel jobs (joblib) with torch threads shared
out, and the submitit path that SLURM uses, exercised with submitit's local executor."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from conftest import SMALL_RUN

BIN = Path(sys.executable).parent
SMALL = SMALL_RUN


def _sweep(tmp_path, *args):
    env = {**os.environ, "TDGS_DATA_DIR": str(tmp_path / "data")}
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [BIN / "tdgs-train", "-m", *SMALL, "pooler=max,tdgs", f"hydra.sweep.dir={sweep}", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted(p.parent for p in sweep.rglob("summary.csv"))


def test_local_parallel_sweep_shares_the_cores(tmp_path):
    runs = _sweep(tmp_path, "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2")
    assert [pd.read_csv(r / "summary.csv").status[0] for r in runs] == ["completed", "completed"]
    threads = {yaml.safe_load((r / "config.yaml").read_text())["trainer"]["threads"] for r in runs}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}


def test_submitit_sweep_runs_each_job_as_its_own_process(tmp_path):
    runs = _sweep(
        tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"
    )
    assert sorted(pd.read_csv(r / "summary.csv").pooler[0] for r in runs) == ["max", "tdgs"]
    assert all(pd.read_csv(r / "summary.csv").status[0] == "completed" for r in runs)
    assert {yaml.safe_load((r / "config.yaml").read_text())["trainer"]["threads"] for r in runs} == {1}


def test_slurm_config_is_ready(tmp_path):
    """The SLURM launcher config composes with its partition, time and resources (no cluster here)."""
    env = {**os.environ, "TDGS_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [BIN / "tdgs-train", "hydra/launcher=slurm", "--cfg", "hydra", "--package", "hydra.launcher"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    launcher = yaml.safe_load(done.stdout)  # the package alone, under a "# @package" comment
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["timeout_min"], launcher["gpus_per_node"], launcher["cpus_per_task"]) == (
        "gpu",
        120,
        1,
        4,
    )


def test_the_slurm_launcher_without_slurm_is_refused_in_one_line(tmp_path):
    env = {**os.environ, "TDGS_DATA_DIR": str(tmp_path / "data"), "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin"}
    done = subprocess.run(
        [BIN / "tdgs-train", "-m", *SMALL, "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output, output[-2000:]
    (line,) = [text for text in output.splitlines() if "ERROR" in text]
    assert line.endswith(
        "hydra/launcher=slurm needs SLURM, but sbatch is not on PATH here; use hydra/launcher=local_parallel"
    )
