"""The report's tables (docs/reproducing.md): each as a CSV frame (numbers) and Markdown (text)."""

from __future__ import annotations

import math

import pandas as pd

from .collect import OPTIONS, SETTING, Runs, default_runs, in_pooler_order, is_default, setting_label
from .stats import cell, mean_std, welch

# The deck's single runs (10 epochs, t0 = 1).
DECK = {("mnist", "max"): 98.96, ("mnist", "tdgs"): 99.24, ("cifar10", "max"): 70.37, ("cifar10", "tdgs"): 72.89}


def markdown(frame: pd.DataFrame) -> str:
    """A frame as a Markdown table (no index)."""
    if frame.empty:
        return "(no runs)"
    text = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _settings(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(dataset, model, epochs) triples: runs on other data, networks or lengths are never pooled."""
    return sorted(set(zip(*(frame[key] for key in SETTING)))) if len(frame) else []


def _compare_to_max(frame: pd.DataFrame, setting: tuple[str, str, int], pooler: str) -> dict:
    same = (frame.dataset == setting[0]) & (frame.model == setting[1]) & (frame.epochs == setting[2])
    acc = frame.loc[same & (frame.pooler == pooler), "test_acc"]
    base = frame.loc[same & (frame.pooler == "max"), "test_acc"]
    mean, std, n = mean_std(acc)
    row = {**dict(zip(SETTING, setting)), "pooler": pooler, "mean": mean, "std": std, "n": n}
    row.update(
        welch(acc, base)
        if pooler != "max" and len(base)
        else {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    )
    return row


def _difference(row) -> str:
    if math.isnan(row["diff"]):
        return ""
    if math.isnan(row["ci_low"]):
        return f"{row['diff']:+.2f}"
    return f"{row['diff']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def _p(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3g}"


COMPARISON = [*SETTING, "pooler", "mean", "std", "n", "diff", "ci_low", "ci_high", "p"]


def _comparison(runs: Runs, poolers: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (dataset, model, epochs), each pooler (default options; all of them, or ``poolers``) with its
    difference to max: the numbers, and the same as text columns."""
    frame = default_runs(runs)
    rows = []
    for setting in _settings(frame):
        same = (frame.dataset == setting[0]) & (frame.model == setting[1]) & (frame.epochs == setting[2])
        present = set(frame.loc[same, "pooler"])
        wanted = poolers or in_pooler_order(present)
        rows += [_compare_to_max(frame, setting, p) for p in wanted if p in present]
    numbers = pd.DataFrame(rows, columns=COMPARISON)
    text = pd.DataFrame(
        {
            "dataset": numbers.dataset,
            "model": numbers.model,
            "epochs": numbers.epochs,
            "pooler": numbers.pooler,
            "test accuracy % (mean ± std (n))": [cell(r["mean"], r["std"], r["n"]) for _, r in numbers.iterrows()],
            "vs max [95% CI]": [_difference(r) for _, r in numbers.iterrows()],
            "p (Welch)": [_p(r["p"]) for _, r in numbers.iterrows()],
        }
    )
    return numbers, text


def deck_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """Per dataset (and network), max and TDGS (default options): test accuracy, difference to max
    with Welch's 95% CI and p-value, and the deck's number (the deck's CNN only)."""
    numbers, text = _comparison(runs, ["max", "tdgs"])
    numbers["deck"] = [
        DECK.get((d, p), math.nan) if m == "deck_cnn" else math.nan
        for d, m, p in zip(numbers.dataset, numbers.model, numbers.pooler)
    ]
    text["deck (10 epochs, 1 run)"] = ["" if math.isnan(v) else f"{v:.2f}" for v in numbers.deck]
    return numbers, markdown(text)


def temperature_init_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """TDGS test accuracy per dataset and initial temperature t0 (other options at their
    defaults); the best t0 of each dataset marked."""
    s = runs.summaries
    if s.empty or "t0" not in s:
        return pd.DataFrame(columns=[*SETTING, "t0", "mean", "std", "n", "best"]), "(no runs)"
    tdgs = s[(s.pooler == "tdgs") & s.drop(columns="t0").apply(is_default, axis=1)]
    rows = []
    for (*setting, t0), group in tdgs.groupby([*SETTING, "t0"]):
        mean, std, n = mean_std(group.test_acc)
        rows.append({**dict(zip(SETTING, setting)), "t0": t0, "mean": mean, "std": std, "n": n})
    numbers = pd.DataFrame(rows, columns=[*SETTING, "t0", "mean", "std", "n"])
    numbers["best"] = numbers["mean"] == numbers.groupby(SETTING)["mean"].transform("max")
    if numbers.empty:
        return numbers, "(no runs)"
    cells = numbers.assign(
        text=[cell(r["mean"], r["std"], r["n"]) + (" **best**" if r["best"] else "") for _, r in numbers.iterrows()],
        setting=[setting_label(*key) for key in zip(*(numbers[k] for k in SETTING))],
    )
    wide = cells.pivot(index="t0", columns="setting", values="text").reset_index()
    wide["t0"] = wide["t0"].map(lambda v: f"{v:g}")
    return numbers, markdown(wide.fillna(""))


def all_poolers_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """Every pooler (default options) per dataset, with its difference to max."""
    numbers, text = _comparison(runs)
    return numbers, markdown(text)


def learned_temperatures_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """Learned temperatures of TDGS runs with default options, per setting and pool layer: median
    T, share max-like (T < 1) and uniform-like (T > 1), pooled over the runs."""
    t, s = runs.temperatures, default_runs(runs)
    columns = [*SETTING, "layer", "median_T", "share_below_1", "share_above_1", "values", "runs"]
    if t.empty or s.empty:
        return pd.DataFrame(columns=columns), "(no runs)"
    t = t.merge(s[["folder", *SETTING]], on="folder")
    rows = [
        {
            **dict(zip(SETTING, setting)),
            "layer": layer,
            "median_T": g.temperature.median(),
            "share_below_1": (g.temperature < 1).mean(),
            "share_above_1": (g.temperature > 1).mean(),
            "values": len(g),
            "runs": g.folder.nunique(),
        }
        for (*setting, layer), g in t.groupby([*SETTING, "layer"])
    ]
    numbers = pd.DataFrame(rows, columns=columns)
    text = numbers.assign(
        median_T=numbers.median_T.map(lambda v: f"{v:.3g}"),
        share_below_1=numbers.share_below_1.map(lambda v: f"{100 * v:.1f}%"),
        share_above_1=numbers.share_above_1.map(lambda v: f"{100 * v:.1f}%"),
    ).rename(
        columns={"median_T": "median T", "share_below_1": "T < 1 (max-like)", "share_above_1": "T > 1 (uniform-like)"}
    )
    return numbers, markdown(text)


def configurations_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """Every distinct configuration (dataset, model, epochs, pooler and the options that vary), mean +- std (n)."""
    s = runs.summaries
    if s.empty:
        return pd.DataFrame(), "(no runs)"
    varying = [o for o in OPTIONS if o in s and s[o].astype(str).nunique() > 1]
    keys = [*SETTING, "pooler", *varying]
    frame = s.assign(**{k: s[k].map(lambda v: "-" if pd.isna(v) else v) for k in varying})
    rows = []
    for values, group in frame.groupby(keys, sort=True):
        mean, std, n = mean_std(group.test_acc)
        rows.append({**dict(zip(keys, values)), "mean": mean, "std": std, "n": n})
    numbers = pd.DataFrame(rows)
    text = numbers[keys].assign(
        **{"test accuracy % (mean ± std (n))": [cell(r["mean"], r["std"], r["n"]) for _, r in numbers.iterrows()]}
    )
    return numbers, markdown(text)


TABLES = {
    "deck_table": ("The deck's table: max vs TDGS", deck_table),
    "temperature_init": ("TDGS accuracy against the initial temperature t0", temperature_init_table),
    "all_poolers": ("All poolers (default options)", all_poolers_table),
    "learned_temperatures": ("Learned temperatures (TDGS, default options)", learned_temperatures_table),
    "configurations": ("Every configuration", configurations_table),
}
