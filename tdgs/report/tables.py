"""The report's tables (docs/reproducing.md): each as a CSV frame (numbers) and Markdown (text)."""

from __future__ import annotations

import math

import pandas as pd

from .collect import (
    OPTIONS,
    SETTING,
    TRAINER_DEFAULTS,
    Runs,
    default_runs,
    in_pooler_order,
    is_default,
    setting_label,
)
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


def _sweep_table(runs: Runs, option: str) -> tuple[pd.DataFrame, str]:
    """TDGS test accuracy per setting and value of ``option`` (everything else at its default);
    the best value of each setting marked."""
    s = runs.summaries
    columns = [*SETTING, option, "mean", "std", "n", "best"]
    if s.empty or option not in s:
        return pd.DataFrame(columns=columns), "(no runs)"
    tdgs = s[(s.pooler == "tdgs") & s.apply(is_default, axis=1, vary=(option,))]
    tdgs = tdgs.assign(**{option: tdgs[option].fillna(TRAINER_DEFAULTS.get(option, math.nan))})  # runs from before it
    rows = []
    for (*setting, value), group in tdgs.groupby([*SETTING, option]):
        mean, std, n = mean_std(group.test_acc)
        rows.append({**dict(zip(SETTING, setting)), option: value, "mean": mean, "std": std, "n": n})
    numbers = pd.DataFrame(rows, columns=columns[:-1])
    numbers["best"] = numbers["mean"] == numbers.groupby(SETTING)["mean"].transform("max")
    if numbers.empty:
        return numbers, "(no runs)"
    cells = numbers.assign(
        text=[cell(r["mean"], r["std"], r["n"]) + (" **best**" if r["best"] else "") for _, r in numbers.iterrows()],
        setting=[setting_label(*key) for key in zip(*(numbers[k] for k in SETTING))],
    )
    wide = cells.pivot(index=option, columns="setting", values="text").reset_index()
    wide[option] = wide[option].map(lambda v: f"{v:g}")
    return numbers, markdown(wide.fillna(""))


def temperature_init_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """TDGS test accuracy per dataset and initial temperature t0; the best t0 marked."""
    return _sweep_table(runs, "t0")


def temperature_lr_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """TDGS test accuracy per dataset and ``theta_lr_scale`` (the temperatures' learning rate over
    the network's); the best marked."""
    return _sweep_table(runs, "theta_lr_scale")


def all_poolers_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """Every pooler (default options) per dataset, with its difference to max."""
    numbers, text = _comparison(runs)
    return numbers, markdown(text)


MOVED = 0.1  # |T - T_initial| above which a temperature counts as having moved


def learned_temperatures(runs: Runs) -> pd.DataFrame:
    """Every temperature of the TDGS runs with default options (any ``theta_lr_scale``): folder,
    layer, temperature, initial, change, setting columns, theta_lr_scale."""
    t, s = runs.temperatures, default_runs(runs, vary=("theta_lr_scale",))
    if t.empty or s.empty:
        return pd.DataFrame()
    s = s.assign(theta_lr_scale=s.get("theta_lr_scale", pd.Series(math.nan, s.index)).fillna(1.0))
    t = t.merge(s[["folder", *SETTING, "setting", "theta_lr_scale"]], on="folder")
    initial = t["initial"] if "initial" in t else pd.Series(math.nan, t.index)  # runs from before it was kept
    return t.assign(initial=initial, change=t.temperature - initial)


def learned_temperatures_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """Learned temperatures of TDGS runs with default options, per setting, ``theta_lr_scale`` and
    pool layer, pooled over the runs: median T, share max-like (T < 1) and uniform-like (T > 1); the
    change from the initial T (quartiles, median size) and the share that moved by more than 0.1."""
    t = learned_temperatures(runs)
    keys = [*SETTING, "theta_lr_scale", "layer"]
    columns = [*keys, "median_T", "share_below_1", "share_above_1", "change_q25", "change_median", "change_q75",
               "median_abs_change", "share_moved", "values", "with_initial", "runs"]  # fmt: skip
    if t.empty:
        return pd.DataFrame(columns=columns), "(no runs)"
    rows = []
    for key, g in t.groupby(keys):
        change, size = g.change.dropna(), g.change.dropna().abs()
        rows.append({
            **dict(zip(keys, key)),
            "median_T": g.temperature.median(),
            "share_below_1": (g.temperature < 1).mean(),
            "share_above_1": (g.temperature > 1).mean(),
            "change_q25": change.quantile(0.25), "change_median": change.median(), "change_q75": change.quantile(0.75),
            "median_abs_change": size.median(),
            "share_moved": (size > MOVED).mean() if len(size) else math.nan,
            "values": len(g),
            "with_initial": len(change),
            "runs": g.folder.nunique(),
        })  # fmt: skip
    numbers = pd.DataFrame(rows, columns=columns)
    number = lambda v: "" if pd.isna(v) else f"{v:.3g}"  # noqa: E731
    share = lambda v: "" if pd.isna(v) else f"{100 * v:.1f}%"  # noqa: E731
    text = pd.DataFrame({
        **{k: numbers[k] for k in keys},
        "median T": numbers.median_T.map(number),
        "T < 1 (max-like)": numbers.share_below_1.map(share),
        "T > 1 (uniform-like)": numbers.share_above_1.map(share),
        "T - T initial: q25, median, q75": [
            "" if pd.isna(r.change_median) else f"{r.change_q25:+.3f}, {r.change_median:+.3f}, {r.change_q75:+.3f}"
            for r in numbers.itertuples()
        ],
        "median abs change": numbers.median_abs_change.map(number),
        f"moved > {MOVED:g}": numbers.share_moved.map(share),
        "values": numbers["values"],
        "with initial T": numbers.with_initial,
        "runs": numbers.runs,
    })  # fmt: skip
    return numbers, markdown(text)


ABLATION = ("normalize", "eval_mode", "granularity")  # the TDGS options experiment=tdgs_ablation varies


def ablation_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """TDGS per setting and combination of normalize, eval_mode and granularity (t0 and the
    optimisation at their defaults): accuracy, the difference to TDGS's defaults over the same seeds
    with Welch's 95% CI and p-value, the best combination marked."""
    keys = [*SETTING, *ABLATION]
    columns = [*keys, "mean", "std", "n", "diff", "ci_low", "ci_high", "p", "best"]
    s = runs.summaries
    if s.empty or not set(ABLATION) <= set(s):
        return pd.DataFrame(columns=columns), "(no runs)"
    tdgs = s[(s.pooler == "tdgs") & s.apply(is_default, axis=1, vary=ABLATION)]
    defaults = tdgs[tdgs.apply(is_default, axis=1)]
    rows = []
    for key, group in tdgs.groupby(keys):
        same = pd.concat([defaults[k] == v for k, v in zip(SETTING, key)], axis=1).all(axis=1)
        base = defaults.loc[same & defaults.seed.isin(group.seed), "test_acc"]  # the same seeds
        mean, std, n = mean_std(group.test_acc)
        versus = welch([], []) if group.index.isin(defaults.index).all() else welch(group.test_acc, base)  # not itself
        rows.append({**dict(zip(keys, key)), "mean": mean, "std": std, "n": n, **versus})
    numbers = pd.DataFrame(rows, columns=columns[:-1])
    numbers["best"] = numbers["mean"] == numbers.groupby(SETTING)["mean"].transform("max")
    text = numbers[keys].assign(
        **{
            "test accuracy % (mean ± std (n))": [
                cell(r["mean"], r["std"], r["n"]) + (" **best**" if r["best"] else "") for _, r in numbers.iterrows()
            ],
            "vs TDGS defaults [95% CI]": [_difference(r) for _, r in numbers.iterrows()],
            "p (Welch)": [_p(r["p"]) for _, r in numbers.iterrows()],
        }
    )
    return numbers, markdown(text)


def configurations_table(runs: Runs) -> tuple[pd.DataFrame, str]:
    """Every distinct configuration (dataset, model, epochs, pooler and the options that vary), mean +- std (n)."""
    s = runs.summaries
    if s.empty:
        return pd.DataFrame(), "(no runs)"
    varying = [o for o in (*OPTIONS, *TRAINER_DEFAULTS) if o in s and s[o].astype(str).nunique() > 1]
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
    "temperature_lr": ("TDGS accuracy against the temperatures' learning rate (theta_lr_scale)", temperature_lr_table),
    "learned_temperatures": (
        "Learned temperatures and their change from the initial T (TDGS, default options)",
        learned_temperatures_table,
    ),  # fmt: skip
    "tdgs_ablation": (
        "TDGS ablation: window normalisation x evaluation mode x temperature granularity",
        ablation_table,
    ),
    "configurations": ("Every configuration", configurations_table),
}
