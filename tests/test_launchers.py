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


def test_parallel_local_jobs_spread_over_the_visible_gpus(tmp_path):
    import contextlib

    from tdgs.cli import job_device

    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    alone = [job_device("auto", joblib, k, 4, tmp_path, contextlib.ExitStack()) for k in range(6)]
    assert alone == [f"cuda:{k % 4}" for k in range(6)]  # jobs one after another: job k on GPU k mod 4
    with contextlib.ExitStack() as running:  # jobs 1, 5, 9, 2, 3 at once: a GPU no other job holds, while one is free
        devices = [job_device("auto", joblib, k, 4, tmp_path, running) for k in (1, 5, 9, 2, 3)]
    assert devices == ["cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:3"]  # the last: every GPU held, 3 mod 4
    for device, launcher, gpus in (("cuda:0", joblib, 4), ("cpu", joblib, 4), ("auto", slurm, 4), ("auto", joblib, 1)):
        assert job_device(device, launcher, 5, gpus, tmp_path, contextlib.ExitStack()) == device  # as given
    assert job_device("auto", {}, 5, 4, tmp_path, contextlib.ExitStack()) == "auto"


def test_a_sweep_job_is_given_its_gpu(monkeypatch, tmp_path):
    """tdgs-train's task function in a local parallel sweep on a machine faked to have 4 GPUs."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    import tdgs.cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    seen = []
    summary = {"best_val_acc": float("nan"), "test_acc": 90.0, "train_seconds": 1.0}
    monkeypatch.setattr(tdgs.cli, "train", lambda cfg, run_dir: seen.append(cfg.device) or summary)
    with initialize_config_dir(version_base="1.3", config_dir=tdgs.cli.CONF_DIR):
        cfg = compose("config", overrides=["hydra/launcher=local_parallel"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode, cfg.hydra.job.num, cfg.hydra.runtime.output_dir = RunMode.MULTIRUN, 6, str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    try:
        for device in ("auto", "cuda:3"):
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            task.device = device
            tdgs.cli.train_main.__wrapped__(task)
    finally:
        HydraConfig.instance().cfg = None
    assert seen == ["cuda:2", "cuda:3"]


def test_run_folders_name_the_network_unless_it_is_the_decks():
    from hydra import compose, initialize_config_dir

    import tdgs.cli  # its resolvers

    with initialize_config_dir(version_base="1.3", config_dir=tdgs.cli.CONF_DIR):
        for model, name in (("deck_cnn", "_synthetic_max_seed0"), ("resnet18", "_synthetic_resnet18_max_seed0")):
            overrides = [f"model={model}", "dataset=synthetic", "pooler=max"]
            cfg = compose("config", overrides=[*overrides, "hydra.job.num=3"], return_hydra_config=True)
            assert cfg.hydra.run.dir.endswith(name) and cfg.hydra.sweep.subdir == f"3{name}"
