"""tdgs-train end to end, as a user runs it: a subprocess of the installed console script in a
temporary folder, on the synthetic set in both geometries and on the digits set."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TRAIN

REQUIRED_SUMMARY = {"dataset", "pooler", "t0", "seed", "epochs", "test_acc", "best_test_acc", "train_seconds", "status"}
REQUIRED_METRICS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
SMALL = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "trainer.epochs=2"]


def run_train(*args, cwd):
    env = {**os.environ, "TDGS_DATA_DIR": str(cwd / "data")}
    return subprocess.run([*TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "pooler,geometry,extra_columns",
    [("tdgs", "mnist", "pool3_T_below_1"), ("gated", "cifar", "pool2_gate_mean")],
)
def test_single_run_writes_the_run_folder(tmp_path, pooler, geometry, extra_columns):
    run = tmp_path / "run"
    result = run_train(*SMALL, f"pooler={pooler}", f"dataset.geometry={geometry}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = pd.read_csv(run / "summary.csv")
    assert len(summary) == 1 and REQUIRED_SUMMARY <= set(summary.columns)
    row = summary.iloc[0]
    assert (row.dataset, row.pooler, row.status, row.epochs, row.seed) == ("synthetic", pooler, "completed", 2, 0)
    assert 0 <= row.test_acc <= 100 and row.best_test_acc >= row.test_acc
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and REQUIRED_METRICS <= set(metrics.columns)
    assert extra_columns in metrics.columns
    assert metrics.test_acc.iloc[-1] == row.test_acc
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["pooler"]["name"] == pooler and config["dataset"]["geometry"] == geometry
    assert (run / "train.log").is_file()
    assert (run / "temperatures.csv").is_file() == (pooler == "tdgs")


def test_digits_run_learns(tmp_path):
    run = tmp_path / "run"
    result = run_train("dataset=digits", "pooler=max", "trainer.epochs=3", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = pd.read_csv(run / "summary.csv").iloc[0]
    assert row.status == "completed" and row.test_acc > 50  # chance is 10%


def test_multirun_gives_one_folder_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train("-m", *SMALL, "trainer.epochs=1", "pooler=max,avg", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert folders == ["0_synthetic_max_seed0", "1_synthetic_avg_seed0"]
    for folder, pooler in zip(folders, ["max", "avg"]):
        row = pd.read_csv(sweep / folder / "summary.csv").iloc[0]
        assert row.pooler == pooler and row.status == "completed"


def test_default_output_folder_names_what_ran(tmp_path):
    result = run_train(*SMALL, "trainer.epochs=1", "pooler=avg", "seed=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    assert run.name.endswith("_synthetic_avg_seed3")


def test_offline_dataset_error_is_one_clear_line(tmp_path):
    result = run_train("dataset=mnist", "dataset.download=false", cwd=tmp_path)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    (line,) = [text for text in output.splitlines() if "missing" in text]
    assert "train-images-idx3-ubyte" in line and str(tmp_path / "data" / "MNIST" / "raw") in line


def test_tdgs_train_starts_without_torchvision(tmp_path):
    """Importing torchvision imports torch._dynamo (about 2 s): only its sets and networks import it."""
    code = "import sys, tdgs.cli; print(sorted(m for m in sys.modules if m.startswith('torchvision')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_help_introduces_tdgs_train_with_the_readme_examples_and_each_dataset_its_own_fields(tmp_path):
    shown = run_train("--help", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("tdgs-train: ") and "powered by Hydra" not in shown.stdout
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    usage = shown.stdout.split("Usage: ")[1].split("\n", 1)[1].split("== Groups")[0]
    examples = [line.strip() for line in usage.splitlines() if line.strip().startswith("tdgs-train")]
    assert len(examples) >= 5 and all(example in readme for example in examples)  # the same commands as the README
    groups = shown.stdout.split("== Groups: group=option ==")[1].split("==")[0]
    assert (
        "model: deck_cnn, resnet18, vgg11_bn" in groups
        and "pooler: avg, gated, max, mixed, s3, stochastic, tdgs" in groups
    )
    assert "schema" not in groups
    digits = yaml.safe_load(shown.stdout.split("key=value ==")[1].split("\n\n")[0])["dataset"]
    assert digits == {"name": "digits", "normalize": False, "seed": 0, "val_size": 0.1, "split_seed": 0}
