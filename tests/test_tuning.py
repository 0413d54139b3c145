"""Tuning with Optuna through Hydra's sweeper (hparams_search=optuna, scripts/tune.sh): every pooler
gets the same number of trials, the sweeper sees validation accuracy only, TDGS also searches t0
and theta_lr_scale, an interrupted search resumes from its trials' run folders, the poolers' best
configurations are trained for five seeds and compared; no search without a validation split."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SMALL_RUN

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = [o for o in SMALL_RUN if not o.startswith("trainer.epochs")] + ["trainer.epochs=1", "dataset.train_size=128"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """scripts/tune.sh with 3 trials per pooler, then --resume over the finished folder."""
    out = tmp_path_factory.mktemp("tune")
    env = {**os.environ, "TDGS_TUNE_DIR": str(out), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env["TDGS_DATA_DIR"] = str(out / "data")
    command = ["bash", str(ROOT / "scripts" / "tune.sh"), "--trials", "3", *TINY]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, env


def _trials(search: Path) -> pd.DataFrame:
    rows = []
    for summary in sorted(search.glob("*/summary.csv")):
        row = pd.read_csv(summary).iloc[0]
        overrides = yaml.safe_load((summary.parent / ".hydra" / "overrides.yaml").read_text())
        rows.append({**row.to_dict(), "overrides": overrides})
    return pd.DataFrame(rows)


def test_each_pooler_gets_the_same_trials_and_is_tuned_on_validation(tuned):
    out, _ = tuned
    every = {"trainer.lr", "trainer.weight_decay"}
    for pooler, searched in (("max", every), ("tdgs", every | {"pooler.t0", "trainer.theta_lr_scale"})):
        trials = _trials(out / f"search_{pooler}")
        assert len(trials) == 3 and (trials.status == "completed").all()
        result = yaml.safe_load((out / f"search_{pooler}" / "optimization_results.yaml").read_text())
        assert set(result["best_params"]) == searched
        assert result["best_value"] == trials.best_val_acc.max()  # validation accuracy, never test
        best = trials.loc[trials.best_val_acc.idxmax()]
        assert all(f"{k}={v}" in best.overrides for k, v in result["best_params"].items())


def test_the_best_configurations_run_five_fresh_seeds_and_are_compared(tuned):
    out, _ = tuned
    for pooler in ("max", "tdgs"):
        runs = _trials(out / f"best_{pooler}")
        assert sorted(runs.seed) == [1, 2, 3, 4, 5] and runs.comparison.nunique() == 1  # not the trials' seed 0
    table = pd.read_csv(out / "report" / "comparisons.csv")
    assert list(zip(table.pooler, table.n)) == [("max", 5), ("tdgs", 5)] and table["diff"].notna().iloc[1]


def test_a_search_resumes_from_its_trials_run_folders(tuned):
    out, env = tuned
    finished = {path: path.stat().st_mtime_ns for path in out.rglob("summary.csv")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "tune.sh"), "--resume", str(out)], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # the sampler proposed the same trials
    assert (done.stdout + done.stderr).count("nothing to do") == 16  # 3 trials and 5 seeds per pooler


def test_a_failed_trial_is_the_worst_and_stays_failed_when_the_search_resumes(tmp_path):
    """A trial whose learning rate diverges (the search gets -inf and goes on; the sweep ends
    without an error), then the search stopped after its first batch and resumed: the same trials,
    the failed one not trained again."""
    env = {**os.environ, "TDGS_DATA_DIR": str(tmp_path / "data")}
    search = [
        BIN / "tdgs-train",
        "-m",
        "hparams_search=optuna",
        "pooler=max",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 's'}",
    ]
    search += ["trainer.lr=choice(1e-3,1e30)", "hydra.sweeper.n_jobs=1"]  # a search dimension of the command line
    first = subprocess.run([*search, "hydra.sweeper.n_trials=2"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = _trials(tmp_path / "s")
    assert len(trials) == 2
    assert "did not complete" in first.stderr + first.stdout and "worst trials" in first.stderr + first.stdout
    finished = {path: path.stat().st_mtime_ns for path in (tmp_path / "s").rglob("summary.csv")}
    again = subprocess.run(
        [*search, "hydra.sweeper.n_trials=4", "resume=true"], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # neither trained again
    resumed = _trials(tmp_path / "s")
    assert len(resumed) == 4 and [o[:2] for o in resumed.overrides[:2]] == [o[:2] for o in trials.overrides]  # lr, wd
    assert (trials.status == "failed").any() and "stays failed when its search resumes" in again.stdout + again.stderr


def test_a_search_without_a_validation_split_is_refused(tmp_path):
    done = subprocess.run(
        [BIN / "tdgs-train", "-m", "hparams_search=optuna", "dataset.val_size=0", f"hydra.sweep.dir={tmp_path / 's'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output and not (tmp_path / "s").exists()
    assert [line for line in output.splitlines() if "ERROR" in line][0].endswith(
        "hydra/sweeper=optuna tunes on the validation accuracy, but dataset.val_size=0 holds no validation split "
        "out; set dataset.val_size (e.g. 0.1)"
    )
