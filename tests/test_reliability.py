"""Reliability: bad inputs get one line and a non-zero exit, never a traceback; checkpoints after
every epoch resume to exactly the same weights and metrics; SIGTERM stops cleanly; a NaN loss
fails the run keeping its finished epochs; damaged checkpoints are skipped; in a sweep a failing
job does not stop the others."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TRAIN, compose_config

import tdgs.train
from tdgs.cli import train_main
from tdgs.train import TrainingDiverged, train
from tdgs.validate import ConfigError

SMALL = ["dataset=synthetic", "dataset.train_size=2000", "dataset.test_size=200", "trainer.progress=false"]


def run_train(*args, cwd, wait=True):
    env = {**os.environ, "TDGS_DATA_DIR": str(cwd / "data")}
    command = [*TRAIN, *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


BAD_INPUTS = [
    (["pooler.t0=-1"], "pooler.t0 must be a finite number > 0, but got -1.0"),
    (["pooler.eps=0"], "pooler.eps must be a finite number > 0, but got 0.0"),
    (["pooler.granularity=pixel"], "pooler.granularity must be one of 'position', 'channel', 'layer', but got 'pixel'"),
    (["pooler.normalize=l3"], "pooler.normalize must be one of 'l2', 'none', 'l1', 'max', but got 'l3'"),
    (["pooler.eval_mode=mean"], "pooler.eval_mode must be one of 'expectation', 'sample', 'argmax', but got 'mean'"),
    (["pooler.rectifier=tanh"], "pooler.rectifier must be one of 'relu', 'softplus', but got 'tanh'"),
    (["pooler=s3", "pooler.grid_size=1"], "pooler.grid_size must be a multiple of stride=2, but got 1"),
    (["trainer.epochs=0"], "trainer.epochs must be a positive integer, but got 0"),
    (["trainer.batch_size=-5"], "trainer.batch_size must be a positive integer, but got -5"),
    (["trainer.lr=0"], "trainer.lr must be a finite number > 0, but got 0.0"),
    (["trainer.theta_lr_scale=-10"], "trainer.theta_lr_scale must be a finite number > 0, but got -10.0"),
    (
        ["pooler=max", "trainer.theta_lr_scale=10"],
        "trainer.theta_lr_scale=10.0 scales the TDGS temperatures' learning rate, but pooler=max has none; "
        "leave it at 1 or use pooler=tdgs",
    ),
    (["device=gpu"], "device must be auto, cpu, cuda or cuda:N, but got 'gpu'"),
    (
        ["dataset.val_size=1.5"],
        "dataset.val_size must be a fraction in [0, 1) or a whole number of images, but got 1.5",
    ),
    (
        ["dataset.val_size=1437"],
        "dataset.val_size=1437 images, but the training set has only 1437; hold out fewer (a count below 1437, "
        "or a fraction)",
    ),
    (
        ["dataset=synthetic", "dataset.train_size=10", "dataset.val_size=9"],
        "dataset.val_size=9.0 leaves class 0 without training images (1 images, 1 held out); hold out fewer",
    ),
    (["trainer.optimizer=lion"], "trainer.optimizer must be one of 'adam', 'adamw', 'sgd', but got 'lion'"),
    (["trainer.schedule=linear"], "trainer.schedule must be one of 'constant', 'cosine', but got 'linear'"),
    (["trainer.augment=mixup"], "trainer.augment must be one of 'none', 'crop', 'flip_crop', but got 'mixup'"),
    (["trainer.warmup_epochs=10"], "trainer.warmup_epochs must be from 0 to trainer.epochs - 1 = 9, but got 10"),
    (["trainer.weight_decay=-0.1"], "trainer.weight_decay must be a finite number >= 0, but got -0.1"),
    (["trainer.label_smoothing=-0.1"], "trainer.label_smoothing must be in [0, 1), but got -0.1"),
    (["trainer.early_stopping_patience=0"], "trainer.early_stopping_patience must be a positive integer, but got 0"),
    (
        ["dataset.val_size=0", "trainer.early_stopping_patience=3"],
        "trainer.early_stopping_patience=3 stops on the validation accuracy, but dataset.val_size=0 holds none out; "
        "set dataset.val_size (e.g. 0.1) or leave it off",
    ),
    (
        ["model=resnet18", "pooler.kernel_size=3"],
        "pooler.kernel_size=3 sets the deck CNN's pools only; model=resnet18 keeps the windows of its own pools",
    ),
    (
        ["dataset=fashion_mnist", "dataset.source=/no/such/folder"],
        "dataset.source must be a readable folder of IDX files, but '/no/such/folder' is not",
    ),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append((["device=cuda"], "device=cuda but CUDA is not available here; use device=auto or device=cpu"))


def assert_refused_in_one_line(overrides, message, *, tmp_path, monkeypatch, capfd, code=2):
    """tdgs-train's own entry point, in this process (a subprocess costs 5 s of start-up; the
    console script itself is run by the tests below): exit code ``code``, exactly one ERROR line
    ending with ``message``, no traceback."""
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides = [*overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", ["tdgs-train", *overrides])
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # Hydra sets up logging; undone after
    monkeypatch.setattr(root, "level", root.level)
    with pytest.raises(SystemExit) as exit:
        train_main()
    output = "".join(capfd.readouterr())
    assert exit.value.code == code and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith(message), output


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_line_without_traceback(tmp_path, monkeypatch, capfd, overrides, message):
    assert_refused_in_one_line(overrides, message, tmp_path=tmp_path, monkeypatch=monkeypatch, capfd=capfd)


def test_an_unreadable_root_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    done = run_train(
        "dataset=cifar10", f"dataset.root={tmp_path / 'a_file'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert done.returncode == 2 and "dataset.root must be a readable folder" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def _wait_for(path: Path, process, seconds=120):
    deadline = time.time() + seconds
    while not path.exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.01)


def _final_state(run: Path):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    return state["model"], pd.read_csv(run / "metrics.csv").drop(columns="seconds")


def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path):
    """With the modern recipe (cosine after a warm-up, AdamW, label smoothing) and crops and flips:
    the schedule and the augmentation's draws go on where they were."""
    args = [*SMALL, "pooler=tdgs", "trainer=modern", "trainer.epochs=4", "trainer.augment=flip_crop"]
    args += ["dataset.normalize=true", "trainer.deterministic=true"]
    assert run_train(*args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path).returncode == 0
    killed = tmp_path / "killed"
    process = run_train(*args, f"hydra.run.dir={killed}", cwd=tmp_path, wait=False)
    _wait_for(killed / "checkpoint.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"] < 4
    resumed = run_train(*args, f"hydra.run.dir={killed}", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resume: continuing" in resumed.stdout + resumed.stderr
    (weights_a, metrics_a), (weights_b, metrics_b) = _final_state(tmp_path / "whole"), _final_state(killed)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    pd.testing.assert_frame_equal(metrics_a, metrics_b)  # every epoch once, same numbers
    assert metrics_b.epoch.tolist() == [1, 2, 3, 4] and metrics_b.lr.is_monotonic_decreasing
    assert pd.read_csv(killed / "summary.csv").status[0] == "completed"
    best_a, best_b = (torch.load(run / "checkpoint_best.pt", weights_only=True) for run in (tmp_path / "whole", killed))
    assert best_a["epoch"] == best_b["epoch"] and all(
        torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"]
    )
    temperatures = pd.read_csv(killed / "temperatures.csv")  # the initial draw too, though resumed
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole" / "temperatures.csv"), temperatures)
    assert not temperatures.initial.equals(temperatures.temperature)


def test_sigterm_stops_at_a_safe_point_and_marks_interrupted(tmp_path):
    run = tmp_path / "run"
    process = run_train(*SMALL, "pooler=max", "trainer.epochs=50", f"hydra.run.dir={run}", cwd=tmp_path, wait=False)
    _wait_for(run / "checkpoint.pt", process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in output and "SIGTERM received" in output
    summary = pd.read_csv(run / "summary.csv").iloc[0]
    assert (summary.status, summary.error) == ("interrupted", "SIGTERM")
    done = pd.read_csv(run / "metrics.csv").epoch.tolist()
    assert done == list(range(1, len(done) + 1)) and summary.epochs_done == len(done)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == len(done)


def test_nan_loss_fails_the_run_and_keeps_finished_epochs(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = torch.nn.functional.cross_entropy

    def poisoned(logits, target, **kwargs):  # NaN from the 40th training loss on (epoch 2)
        loss = real(logits, target, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= 40:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(tdgs.train.F, "cross_entropy", poisoned)
    cfg = compose_config(*SMALL, "pooler=tdgs", "trainer.epochs=3", f"paths.data_dir={tmp_path}")
    with pytest.raises(
        TrainingDiverged, match=r"the training loss became nan in epoch 2; stopped, keeping the 1 finished"
    ):
        train(cfg, tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv").iloc[0]
    assert summary.status == "failed" and summary.error.startswith("TrainingDiverged: the training loss became nan")
    assert pd.read_csv(tmp_path / "metrics.csv").epoch.tolist() == [1]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_then_to_a_clean_start(tmp_path, caplog):
    """In this process, through train() (resuming is train()'s; the tests above run the command); a
    completed run is never started over."""
    run = tmp_path / "run"
    args = [*SMALL, "dataset.train_size=256", "pooler=max", f"paths.data_dir={tmp_path / 'data'}"]
    assert train(compose_config(*args, "trainer.epochs=2"), run)["status"] == "completed"
    checkpoint = run / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # truncated mid-write
    caplog.set_level(logging.INFO, logger="tdgs")
    assert train(compose_config(*args, "trainer.epochs=3", "resume=true"), run)["status"] == "completed"
    assert "checkpoint.pt is unreadable" in caplog.text and "continuing" in caplog.text
    assert "after epoch 1" in caplog.text
    assert pd.read_csv(run / "metrics.csv").epoch.tolist() == [1, 2, 3]
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).write_bytes(b"not a checkpoint")
    before = {name: (run / name).read_bytes() for name in ("summary.csv", "metrics.csv")}
    with pytest.raises(ConfigError, match="holds a completed run but no usable checkpoint to continue it from"):
        train(compose_config(*args, "trainer.epochs=4", "resume=true"), run)  # a finished run is never trained over
    assert {name: (run / name).read_bytes() for name in before} == before
    summary = pd.read_csv(run / "summary.csv").assign(status="interrupted")  # a run killed before it finished
    summary.to_csv(run / "summary.csv", index=False)
    caplog.clear()
    assert train(compose_config(*args, "trainer.epochs=2", "resume=true"), run)["status"] == "completed"
    assert "starting from scratch" in caplog.text
    assert pd.read_csv(run / "metrics.csv").epoch.tolist() == [1, 2]


def test_a_failing_job_does_not_stop_the_sweep_but_fails_it(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_train(
        "-m",
        *SMALL,
        "dataset.train_size=256",
        "trainer.epochs=1",
        "pooler=tdgs",
        "pooler.t0=-1,1.0",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    (line,) = [line for line in (done.stdout + done.stderr).splitlines() if "jobs of the sweep" in line]
    assert line.endswith(f"1 of 2 jobs of the sweep did not complete: {sweep / '0_synthetic_tdgs_seed0'}")
    statuses = {p.parent.name: pd.read_csv(p).status[0] for p in sweep.rglob("summary.csv")}
    assert sorted(statuses.values()) == ["completed", "failed"]
    failed = next(pd.read_csv(p).iloc[0] for p in sweep.rglob("summary.csv") if pd.read_csv(p).status[0] == "failed")
    assert "pooler.t0 must be a finite number > 0" in failed.error


def test_a_run_folder_is_never_overwritten_by_a_refused_start(tmp_path):
    """In this process, through train() (the command line turns ConfigError into exit code 2)."""
    run = tmp_path / "run"
    args = [*SMALL, "dataset.train_size=256", "pooler=max"]
    assert train(compose_config(*args, "trainer.epochs=2"), run)["status"] == "completed"
    before = {
        name: (run / name).read_bytes() for name in ("summary.csv", "metrics.csv", "config.yaml", "checkpoint.pt")
    }
    refusals = [
        (["trainer.epochs=2"], "already holds a run; resume=true continues it"),  # a fresh start
        (
            ["trainer.epochs=2", "resume=true", "dataset.val_size=0"],
            r"was written by another configuration \(its dataset differ\); resume it with its own \(a run from before",
        ),
        (["trainer.epochs=3", "resume=true", "trainer.lr=0.1"], "was written by another configuration"),
        (["trainer.epochs=3", "resume=true", "seed=5"], "was written by another configuration"),
        (["trainer.epochs=1", "resume=true"], "trainer.epochs=1 but"),
    ]
    for overrides, message in refusals:
        with pytest.raises(ConfigError, match=message):
            train(compose_config(*args, *overrides), run)
        assert {name: (run / name).read_bytes() for name in before} == before


def test_a_requeued_slurm_job_resumes_by_itself(tmp_path, monkeypatch, caplog):
    """In this process: a requeued job runs the same command again, with SLURM_RESTART_COUNT > 0."""
    run = tmp_path / "run"
    args = [*SMALL, "dataset.train_size=256", "pooler=max", f"paths.data_dir={tmp_path / 'data'}"]
    assert train(compose_config(*args, "trainer.epochs=1"), run)["status"] == "completed"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    caplog.set_level(logging.INFO, logger="tdgs")
    assert train(compose_config(*args, "trainer.epochs=2"), run)["status"] == "completed"
    assert "resume: continuing" in caplog.text
    assert pd.read_csv(run / "metrics.csv").epoch.tolist() == [1, 2]
