"""The loggers (logger=[csv,tensorboard,mlflow]) with the real components: a 2-run sweep logging
to both, read back from the event files, from a real `tensorboard` server's HTTP API and with
MLflow's client; a stopped and resumed run logs each epoch exactly once; a missing package is
refused in one line naming the extra."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import SMALL_RUN, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tdgs.loggers
import tdgs.train
from tdgs.errors import ConfigError, Interrupted
from tdgs.loggers import check_loggers
from tdgs.train import train

BIN = Path(sys.executable).parent
LOGGED = ["logger=[csv,tensorboard,mlflow]", "trainer.epochs=3"]


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def mlflow_client(output_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{output_dir.resolve() / 'mlflow.db'}")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real 2-run sweep (max and TDGS) with every logger."""
    root = tmp_path_factory.mktemp("logged")
    args = [*SMALL_RUN, *LOGGED, "pooler=max,tdgs", f"hydra.sweep.dir={root / 'sweep'}", f"paths.output_dir={root}"]
    args += ["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"]  # both jobs at once on one MLflow store
    env = {**os.environ, "TDGS_DATA_DIR": str(root / "data")}
    done = subprocess.run(
        [BIN / "tdgs-train", "-m", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_event_files_hold_every_epoch_and_a_temperature_histogram_per_tdgs_layer(sweep):
    for run in sorted((sweep / "sweep").glob("*_seed0")):
        metrics = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
        val_acc = [float(row[metrics[0].index("val_acc")]) for row in metrics[1:]]
        assert scalars(run, "accuracy/val") == [(e, pytest.approx(v)) for e, v in zip((1, 2, 3), val_acc)]
        for tag in ("loss/train", "loss/test", "accuracy/test", "lr"):
            assert [step for step, _ in scalars(run, tag)] == [1, 2, 3]
        events = EventAccumulator(str(run / "tensorboard"), size_guidance={"histograms": 0})
        events.Reload()
        histograms = events.Tags()["histograms"]
        if "tdgs" in run.name:
            assert histograms == ["temperature/pool1", "temperature/pool2", "temperature/pool3"]
            assert [h.step for h in events.Histograms("temperature/pool3")] == [1, 2, 3]
            assert [s for s, _ in scalars(run, "temperature/pool2/median")] == [1, 2, 3]
        else:
            assert histograms == []
        assert "final/test_acc_at_best_val" in events.Tags()["scalars"]
        tags = set(events.PluginTagToContent("hparams"))  # a session each: the dashboard's columns from every run
        assert {
            "_hparams_/session_start_info",
            "_hparams_/session_end_info",
        } <= tags and "_hparams_/experiment" not in tags


def test_a_tensorboard_server_shows_both_runs(sweep):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [BIN / "tensorboard", "--logdir", str(sweep / "sweep"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, tags = time.time() + 120, {}
        while len(tags) < 2:
            assert server.poll() is None and time.time() < deadline, "tensorboard did not serve both runs"
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as answer:
                    tags = json.load(answer)
            except OSError:  # not listening yet
                continue
        assert sorted(tags) == ["0_synthetic_max_seed0/tensorboard", "1_synthetic_tdgs_seed0/tensorboard"]
        for run in tags:
            query = urllib.parse.urlencode({"run": run, "tag": "accuracy/val"})
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{query}") as answer:
                points = json.load(answer)  # [wall time, step, value] each
            assert [step for _, step, _ in points] == [1, 2, 3]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_mlflow_holds_both_runs_in_the_sweeps_experiment(sweep):
    client = mlflow_client(sweep)
    experiment = client.get_experiment_by_name("sweep")  # the folder the sweep's runs lie in
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["0_synthetic_max_seed0", "1_synthetic_tdgs_seed0"]
    for name, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.params["pooler.name"] in name and run.data.params["trainer.epochs"] == "3"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2, 3]
        summary = (sweep / "sweep" / name / "summary.csv").read_text().splitlines()
        selected = float(summary[1].split(",")[summary[0].split(",").index("test_acc_at_best_val")])
        assert run.data.metrics["final_test_acc_at_best_val"] == pytest.approx(selected)
        assert {"summary.csv", "metrics.csv", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.parametrize("stop", ["before_logging", "in_the_next_epoch"])
def test_a_stopped_run_resumed_logs_each_epoch_once(tmp_path, monkeypatch, stop):
    """Stopped after epoch 2's checkpoint but before its logs, or during epoch 3 after them."""
    args = [*SMALL_RUN, *LOGGED, "pooler=tdgs", "device=cpu", f"paths.output_dir={tmp_path}"]
    run_dir = tmp_path / "run"
    if stop == "before_logging":
        real = tdgs.loggers.MLflow.log_epoch

        def stopped(self, row, model):
            if row["epoch"] == 2:
                raise KeyboardInterrupt
            real(self, row, model)

        monkeypatch.setattr(tdgs.loggers.MLflow, "log_epoch", stopped)  # MLflow is called after TensorBoard
    else:
        real = tdgs.train.run_epoch
        monkeypatch.setattr(
            tdgs.train,
            "run_epoch",
            lambda run, epoch, *a: (_ for _ in ()).throw(Interrupted(15)) if epoch == 3 else real(run, epoch, *a),
        )
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        train(compose_config(*args), run_dir)
    monkeypatch.undo()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2
    summary = train(compose_config(*args, "resume=true"), run_dir)
    assert summary["status"] == "completed"
    assert [step for step, _ in scalars(run_dir, "accuracy/val")] == [1, 2, 3]
    client = mlflow_client(tmp_path)
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2, 3]
    assert len(client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])) == 1


def test_a_logger_without_its_package_is_refused_in_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as error:
        check_loggers(["csv", "mlflow"])
    assert str(error.value) == (
        "logger=mlflow needs the mlflow package, which is not installed: pip install 'tdgs[mlflow]'"
    )
    check_loggers(["csv", "tensorboard"])


def test_a_run_stopped_as_its_mlflow_run_began_keeps_that_run(tmp_path, monkeypatch):
    """The MLflow run's id is kept before anything else is logged to it: a resume never makes a second."""
    args = [
        *SMALL_RUN,
        "logger=[csv,mlflow]",
        "trainer.epochs=2",
        "pooler=max",
        "device=cpu",
        f"paths.output_dir={tmp_path}",
    ]

    def stopped(self, run_id, **kwargs):
        raise KeyboardInterrupt

    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(MlflowClient, "log_batch", stopped)  # the parameters, right after the run began
    with pytest.raises(KeyboardInterrupt):
        train(compose_config(*args), tmp_path / "run")
    monkeypatch.undo()
    train(compose_config(*args, "resume=true"), tmp_path / "run")
    client = mlflow_client(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_a_run_extended_logs_its_new_epochs_and_final_values_once(tmp_path):
    args = [*SMALL_RUN, "logger=[csv,tensorboard,mlflow]", "pooler=max", "device=cpu", f"paths.output_dir={tmp_path}"]
    train(compose_config(*args, "trainer.epochs=2"), tmp_path / "run")
    train(compose_config(*args, "trainer.epochs=3", "resume=true"), tmp_path / "run")
    assert [step for step, _ in scalars(tmp_path / "run", "final/test_acc")] == [3]
    assert [step for step, _ in scalars(tmp_path / "run", "accuracy/val")] == [1, 2, 3]
    client = mlflow_client(tmp_path)
    run_id = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2, 3]
    run = client.get_run(run_id)
    assert run.data.params["trainer.epochs"] == "2" and run.data.tags["resumed_with.trainer.epochs"] == "3"
    assert run.info.status == "FINISHED"


def test_a_failing_logger_warns_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    def broken(self, row, model):
        raise OSError("disk full")

    monkeypatch.setattr(tdgs.loggers.TensorBoard, "log_epoch", broken)
    args = [*SMALL_RUN, "logger=[csv,tensorboard]", "trainer.epochs=2", "pooler=max", "device=cpu"]
    summary = train(compose_config(*args, f"paths.output_dir={tmp_path}"), tmp_path / "run")
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    warnings = [r.message for r in caplog.records if "logger tensorboard failed" in r.message]
    assert len(warnings) == 1 and "OSError: disk full" in warnings[0]  # once: then it logs nothing more
