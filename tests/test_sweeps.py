"""Sweeps that survive scale: parallel jobs preparing one data folder, a sweep with a failed job
that says so, resuming a sweep folder, and output folders that cannot be written."""

import errno
import os
import subprocess

import pandas as pd
import pytest
from conftest import TRAIN
from test_data import make_idx_folder
from test_reliability import assert_refused_in_one_line

import tdgs.results
from tdgs.data.vision import IDX_FILES

SMALL = ["trainer.epochs=1", "trainer.progress=false", "pooler=max"]


def run(*args, cwd):
    env = {**os.environ, "TDGS_DATA_DIR": str(cwd / "data")}
    return subprocess.run([*TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_six_parallel_jobs_prepare_one_empty_data_folder(tmp_path):
    """The jobs stage the .gz files into the shared folder together: each file once, none half-written."""
    make_idx_folder(tmp_path / "source", gz=True)
    args = [
        "-m",
        *SMALL,
        "dataset=fashion_mnist",
        f"dataset.source={tmp_path / 'source'}",
        f"dataset.root={tmp_path / 'data'}",
        "seed=0,1,2,3,4,5",
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=6",
    ]
    for attempt in ("empty data folder", "files already there"):
        sweep = tmp_path / attempt.replace(" ", "_")
        done = run(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
        assert done.returncode == 0, f"{attempt}: {done.stderr[-3000:]}"
        statuses = [pd.read_csv(path).status[0] for path in sweep.glob("*/summary.csv")]
        assert statuses == ["completed"] * 6, attempt
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".prepare")) == sorted(IDX_FILES)


def test_a_truncated_data_file_is_one_line(tmp_path, monkeypatch, capfd):
    raw = tmp_path / "data" / "MNIST" / "raw"
    make_idx_folder(raw, gz=False)
    (raw / IDX_FILES[2]).write_bytes((raw / IDX_FILES[2]).read_bytes()[:1000])
    message = (
        f"{raw / IDX_FILES[2]} is damaged or incomplete: its header promises 3936 bytes, it holds 1000; "
        "delete it to fetch it again"
    )
    assert_refused_in_one_line(
        ["dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false"],
        message,
        tmp_path=tmp_path,
        monkeypatch=monkeypatch,
        capfd=capfd,
        code=1,
    )


def test_resume_over_a_sweep_folder_skips_completed_jobs_resumes_interrupted_runs_missing(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *SMALL,
        "dataset=synthetic",
        "dataset.train_size=256",
        "dataset.test_size=64",
        "trainer.epochs=2",
        "seed=0,1,2,3",
        f"hydra.sweep.dir={sweep}",
    ]
    assert run(*args, cwd=tmp_path).returncode == 0
    completed, interrupted, missing, copied = (sweep / f"{i}_synthetic_max_seed{i}" for i in range(4))
    kept = {name: (completed / name).stat().st_mtime_ns for name in ("summary.csv", "metrics.csv", "checkpoint.pt")}
    for name in ("summary.csv", "checkpoint.pt"):  # killed while writing epoch 2's files: epoch 1's checkpoint is left
        (interrupted / name).unlink()
    before = pd.read_csv(interrupted / "metrics.csv")
    subprocess.run(["rm", "-r", str(missing)], check=True)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):  # copied elsewhere without its checkpoints
        (copied / name).unlink()
    copied_kept = {name: (copied / name).stat().st_mtime_ns for name in ("summary.csv", "metrics.csv")}
    done = run(*args, "resume=true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {name: (completed / name).stat().st_mtime_ns for name in kept} == kept  # left as it was
    assert {name: (copied / name).stat().st_mtime_ns for name in copied_kept} == copied_kept  # its config.yaml says
    assert not (copied / "checkpoint.pt").exists()
    after = pd.read_csv(interrupted / "metrics.csv")
    assert after.epoch.tolist() == [1, 2] and after.train_loss[0] == before.train_loss[0]
    for job in (completed, interrupted, missing):
        summary = pd.read_csv(job / "summary.csv").iloc[0]
        assert (summary.status, summary.epochs_done) == ("completed", 2)


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, capfd):
    (tmp_path / "a_file").write_text("not a folder")
    run_dir = tmp_path / "a_file" / "run"
    message = (
        f"hydra.run.dir={run_dir} cannot be written (Not a directory); choose another folder, e.g. hydra.run.dir=DIR"
    )
    assert_refused_in_one_line(
        ["dataset=synthetic", f"hydra.run.dir={run_dir}"],
        message,
        tmp_path=tmp_path,
        monkeypatch=monkeypatch,
        capfd=capfd,
        code=1,
    )


@pytest.mark.parametrize("failing", ["metrics.csv", "every file"])
def test_a_full_disk_stops_the_run_in_one_line_and_never_half_writes_a_result(tmp_path, monkeypatch, capfd, failing):
    real = os.replace

    def full_disk(source, target):
        if failing == "every file" or str(target).endswith(failing):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(source, target)

    monkeypatch.setattr(tdgs.results.os, "replace", full_disk)
    run_dir = tmp_path / "run"
    written = run_dir / ("metrics.csv" if failing == "metrics.csv" else "config.yaml")
    message = f"cannot write {written}: No space left on device"
    assert_refused_in_one_line(
        ["dataset=synthetic", "dataset.train_size=128", *SMALL, f"hydra.run.dir={run_dir}"],
        message,
        tmp_path=tmp_path,
        monkeypatch=monkeypatch,
        capfd=capfd,
        code=1,
    )
    assert not list(run_dir.glob(".*.partial"))
    if failing == "every file":
        assert not (run_dir / "summary.csv").exists()
    else:  # the summary could still be written: it says what happened
        summary = pd.read_csv(run_dir / "summary.csv").iloc[0]
        assert summary.status == "failed" and summary.error == f"OutputError: {message}"
