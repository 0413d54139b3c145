"""A run folder's files, written atomically (temporary file, then ``os.replace``) so that a crash
never leaves a half-written result behind.

- ``summary.csv``: one row, the run's outcome (docs/runs.md lists the columns).
- ``metrics.csv``: one row per finished epoch.
- ``temperatures.csv``: every learned TDGS temperature (TDGS runs only).
- ``config.yaml``: the resolved configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .errors import OutputError

SUMMARY = "summary.csv"
METRICS = "metrics.csv"
TEMPERATURES = "temperatures.csv"
CONFIG = "config.yaml"
STATUSES = ("completed", "failed", "interrupted")


def replace_atomic(path: Path, write) -> None:
    """Write ``path`` in one step: ``write(partial)`` fills a temporary file of this process beside
    it, which then takes its name. On any failure the temporary file is removed (``path`` is left as
    it was); an OSError becomes an :class:`OutputError` naming ``path``."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step."""
    replace_atomic(path, lambda partial: partial.write_text(text))


def write_csv_atomic(path: Path, rows: pd.DataFrame | list[dict]) -> None:
    """Replace ``path`` by the CSV of ``rows`` in one step."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    write_text_atomic(path, frame.to_csv(index=False))


def run_status(run_dir: Path) -> str:
    """The ``status`` column of a run folder's summary.csv, or ``"no summary"``."""
    try:
        return str(pd.read_csv(run_dir / SUMMARY).status.iloc[0])
    except (OSError, ValueError, AttributeError, IndexError, pd.errors.ParserError):
        return "no summary"


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
    columns = ["run", "dataset", "pooler", "status", "epochs_done", "best_val_acc", "test_acc_at_best_val", "test_acc",
               "train_seconds"]  # fmt: skip
    listing = runs.reindex(columns=columns)  # a summary.csv older than validation: empty columns
    print(listing.to_string(index=False, float_format=lambda v: f"{v:.2f}") if len(runs) else "no runs")
