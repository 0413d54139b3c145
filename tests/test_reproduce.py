"""The one-command reproduction, in its smoke variant: four sweeps and the report, end to end."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_reproduction_runs_every_experiment_and_reports(tmp_path):
    out = tmp_path / "reproduce"
    env = {**os.environ, "TDGS_REPRODUCE_DIR": str(out), "TDGS_BIN": str(Path(sys.executable).parent),
           "TDGS_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "reproduce.sh"), "--smoke", "dataset.train_size=256", "dataset.test_size=128"],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {name: len(list((out / name).rglob("summary.csv"))) for name in ("deck_table", "temperature_init", "all_poolers", "tdgs_ablation")}
    assert runs == {"deck_table": 4, "temperature_init": 18, "all_poolers": 14, "tdgs_ablation": 24}
    report = (out / "report" / "report.md").read_text()
    assert "60 completed runs" in report and "None: every run folder completed" in report
    configurations = pd.read_csv(out / "report" / "configurations.csv")
    assert {"normalize", "eval_mode", "granularity", "t0"} <= set(configurations.columns)
    assert (out / "report" / "accuracy_vs_t0.png").exists()
