"""``tdgs-report ROOT... [--out DIR]``: every run below the roots, aggregated into report.md, one
CSV per table and PNG plots."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ..results import write_csv_atomic, write_text_atomic
from . import plots
from .collect import collect
from .tables import METRICS, TABLES, markdown


def duplicates_note(duplicates: pd.DataFrame) -> str:
    """How many runs repeated a (configuration, seed) and were counted once (duplicates.csv)."""
    if duplicates.empty:
        return ""
    spread = (duplicates.test_acc - duplicates.kept_test_acc).abs().max()
    return (
        f" ({len(duplicates)} more run{'s' * (len(duplicates) > 1)} repeated the configuration and seed of one of "
        f"them, as experiments share runs, and counted once: duplicates.csv; largest accuracy difference to the run "
        f"kept {spread:.2f} points)"
    )


def build_report(roots: list[Path], out: Path, metric: str = "selected") -> str:
    """Write the report into ``out``; return its Markdown. ``metric``: see :mod:`tdgs.report.tables`."""
    out.mkdir(parents=True, exist_ok=True)
    runs = collect(roots)
    sections = [
        f"# TDGS report\n\n{len(runs.summaries)} completed runs below {', '.join(map(str, roots))}"
        f"{duplicates_note(runs.duplicates)}; {len(runs.problems)} folders listed under Problems. "
        f"Written {datetime.now():%Y-%m-%d %H:%M}.",
    ]
    numbers = {}
    for name, (title, build) in TABLES.items():
        numbers[name], text = build(runs, metric)
        write_csv_atomic(out / f"{name}.csv", numbers[name])
        sections.append(f"## {title}\n\n{text}")
    figures = [
        plots.training_curves(runs, out / "training_curves.png"),
        plots.accuracy_vs_t0(numbers["temperature_init"], out / "accuracy_vs_t0.png"),
        *plots.temperature_histograms(runs, out),
        *plots.temperature_trajectories(runs, out),
    ]
    figures = [f for f in figures if f is not None]
    if figures:
        sections.append("## Figures\n\n" + "\n".join(f"![{f.stem}]({f.name})" for f in figures))
    write_csv_atomic(out / "duplicates.csv", runs.duplicates)
    problems = runs.problems
    write_csv_atomic(out / "problems.csv", problems)
    sections.append(
        "## Problems\n\n"
        + (markdown(problems) if len(problems) else "None: every run folder completed and was readable.")
    )
    report = "\n\n".join(sections) + "\n"
    write_text_atomic(out / "report.md", report)
    return report


def best_override(roots: list[Path], key: str) -> str:
    """The value of the command-line override ``key`` (each run's ``.hydra/overrides.yaml``) whose
    completed runs below ``roots`` have the highest mean best validation accuracy; a ValueError when
    no run with a validation split was given that override."""
    runs = collect(roots).summaries
    scores: dict[str, list[float]] = {}
    for folder, accuracy in zip(runs.get("folder", []), runs.get("best_val_acc", [])):
        overrides = Path(folder, ".hydra", "overrides.yaml")
        values = (
            [o.split("=", 1)[1] for o in OmegaConf.load(overrides) if o.startswith(f"{key}=")]
            if overrides.is_file()
            else []
        )
        if values and pd.notna(accuracy):
            scores.setdefault(values[0], []).append(accuracy)
    if not scores:
        raise ValueError(
            f"no completed run with a validation split below {', '.join(map(str, roots))} was given {key}=..."
        )
    return max(scores, key=lambda value: sum(scores[value]) / len(scores[value]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tdgs-report", description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding run folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: ROOT/report for one root)")
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default="selected",
        help="selected (default): each run's test accuracy at its best validation epoch, where every run of a table "
        "has a validation split (else the final epoch's); final: the final epoch's",
    )
    parser.add_argument(
        "--best-override",
        metavar="KEY",
        help="print only the value of the sweep override KEY whose runs have the best mean validation accuracy "
        "(how scripts/reproduce.sh picks the TDGS setting of the recipe comparison)",
    )
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        print(f"tdgs-report: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.best_override:
        try:
            print(best_override(args.roots, args.best_override))
        except ValueError as error:
            print(f"tdgs-report: {error}", file=sys.stderr)
            return 2
        return 0
    out = args.out or (args.roots[0] / "report" if len(args.roots) == 1 else Path("outputs/report"))
    print(build_report(args.roots, out, args.metric))
    print(f"report written to {out}/ (report.md, one CSV per table, PNG figures)")
    return 0


def entry() -> None:
    """The ``tdgs-report`` console script."""
    sys.exit(main())
