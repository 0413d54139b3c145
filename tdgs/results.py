"""A run folder's files, written atomically (temporary file, then ``os.replace``) so that a crash
never leaves a half-written result behind.

- ``summary.csv``: one row, the run's outcome (SPEC.md section 4 columns and more).
- ``metrics.csv``: one row per finished epoch.
- ``temperatures.csv``: every learned TDGS temperature (TDGS runs only).
- ``config.yaml``: the resolved configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

SUMMARY = "summary.csv"
METRICS = "metrics.csv"
TEMPERATURES = "temperatures.csv"
CONFIG = "config.yaml"
STATUSES = ("completed", "failed", "interrupted")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_csv_atomic(path: Path, rows: pd.DataFrame | list[dict]) -> None:
    """Replace ``path`` by the CSV of ``rows`` in one step."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    write_text_atomic(path, frame.to_csv(index=False))


def list_runs(root: Path) -> pd.DataFrame:
    """One row per run folder below ``root`` with a readable summary.csv (a plain listing; the
    statistics are tdgs-report's job)."""
    rows = []
    for path in sorted(Path(root).rglob(SUMMARY)):
        row = pd.read_csv(path).iloc[0].to_dict()
        rows.append({"run": str(path.parent.relative_to(root)), **row})
    return pd.DataFrame(rows)


if __name__ == "__main__":  # python -m tdgs.results FOLDER: list the runs below FOLDER
    import sys

    runs = list_runs(Path(sys.argv[1]))
    columns = ["run", "dataset", "pooler", "status", "epochs_done", "test_acc", "train_seconds"]
    print(runs[columns].to_string(index=False, float_format=lambda v: f"{v:.2f}") if len(runs) else "no runs")
