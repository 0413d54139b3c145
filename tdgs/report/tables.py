"""The report's tables (docs/reproducing.md): each as a CSV frame (numbers) and Markdown (text).

Runs with a validation split and runs without it are in separate tables (each section holds one of
each kind it has). Which accuracy a table reports (``metric``): ``selected``, the test accuracy of
each run's best validation epoch when every run of the table has a validation split, else the final
epoch's (``final``, or ``selected`` falling back); the table's first line says which. Every "best"
mark (t0, theta_lr_scale, ablation setting, pooler) is chosen by validation accuracy; in a table
without a validation split, by test accuracy, and the mark and the first line say so."""

from __future__ import annotations

import math

import pandas as pd

from .collect import (
    DEFAULT_OPTIMISATION,
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

# The deck's single runs: its CNN and recipe, 10 epochs, no validation split, t0 = 1; keyed by setting and pooler.
_DECK_SETTING = ("deck_cnn", 10, "default", "no validation")
DECK = {
    (data, *_DECK_SETTING, pooler): accuracy
    for (data, pooler), accuracy in {("mnist", "max"): 98.96, ("mnist", "tdgs"): 99.24, ("cifar10", "max"): 70.37,
                                     ("cifar10", "tdgs"): 72.89}.items()
}  # fmt: skip


def markdown(frame: pd.DataFrame) -> str:
    """A frame as a Markdown table (no index)."""
    if frame.empty:
        return "(no runs)"
    text = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


METRICS = ("selected", "final")
BEST_MARKS = {"validation": " **best**", "test": " **best** (by test accuracy, no validation split)"}


def accuracy(frame: pd.DataFrame, metric: str) -> tuple[str, str]:
    """The summary column a table over ``frame`` reports for ``metric`` (one of :data:`METRICS`),
    and the words for it."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(map(repr, METRICS))}, but got {metric!r}")
    if metric == "selected" and len(frame) and (frame.val_size > 0).all():
        return "test_acc_at_best_val", "test accuracy at each run's best validation epoch"
    why = " (not every run has a validation split)" if metric == "selected" and (frame.val_size > 0).any() else ""
    why = " (no validation split)" if metric == "selected" and not why else why
    return "test_acc", f"final-epoch test accuracy{why}"


def selection(group: pd.DataFrame, column: str) -> tuple[float, str]:
    """What a "best" mark compares for a group of runs reported by ``column``: the mean validation
    accuracy at the same epochs (the best validation epoch's, or the last) and ``validation``;
    without a validation split, the mean of ``column`` itself and ``test``."""
    if len(group) and (group.val_size > 0).all():
        return group["best_val_acc" if column == "test_acc_at_best_val" else "val_acc"].mean(), "validation"
    return group[column].mean(), "test"


def mark_best(numbers: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``best``: per group of ``keys``, the row with the highest ``select`` (:func:`selection`)."""
    return numbers.assign(best=numbers["select"] == numbers.groupby(keys)["select"].transform("max"))


def best_mark(row) -> str:
    """The Markdown mark of a row of :func:`mark_best`, saying on what it was chosen."""
    return BEST_MARKS[row["selected_by"]] if row["best"] else ""


MARKED_BY = {"validation": "best marks chosen by validation accuracy", "test": "best marks chosen by test accuracy"}


def heading(what: str, marks: set[str]) -> str:
    """The line above a table: which accuracy it reports, and on what its "best" marks (if any) are chosen."""
    chosen = "".join(f"; {MARKED_BY[m]}" for m in sorted(marks, reverse=True))
    return f"*{what[0].upper()}{what[1:]}, mean ± std over seeds (n){chosen}.*\n\n"


def by_validation(frame: pd.DataFrame, metric: str, build) -> tuple[pd.DataFrame, str]:
    """``build(part, column) -> (numbers, text)`` for the runs with a validation split and for those
    without, each a table of its own under its own :func:`heading`: the numbers stacked, with the
    summary column each reports (``accuracy``), and the texts one after the other."""
    numbers, texts = [], []
    for part in (frame[frame.val_size > 0], frame[~(frame.val_size > 0)]) if len(frame) else ():
        if part.empty:
            continue
        column, what = accuracy(part, metric)
        table, text = build(part, column)
        marks = set(table.selected_by[table.best]) if "best" in table else set()
        numbers.append(table.assign(accuracy=column))
        texts.append(heading(what, marks) + text)
    if not numbers:
        return pd.DataFrame(), "(no runs)"
    return pd.concat(numbers, ignore_index=True), "\n\n".join(texts)


def _settings(frame: pd.DataFrame) -> list[tuple]:
    """:data:`SETTING` tuples: runs on other data, networks, lengths, recipes or splits are never pooled."""
    return sorted(set(zip(*(frame[key] for key in SETTING)))) if len(frame) else []


def _in_setting(frame: pd.DataFrame, setting: tuple) -> pd.Series:
    return pd.concat([frame[k] == v for k, v in zip(SETTING, setting)], axis=1).all(axis=1)


def _compare_to_max(frame: pd.DataFrame, setting: tuple, pooler: str, column: str) -> dict:
    same = _in_setting(frame, setting)
    runs = frame[same & (frame.pooler == pooler)]
    base = frame.loc[same & (frame.pooler == "max"), column]
    mean, std, n = mean_std(runs[column])
    final_mean, final_std, _ = mean_std(runs.test_acc)
    select, selected_by = selection(runs, column)
    row = {**dict(zip(SETTING, setting)), "pooler": pooler, "mean": mean, "std": std, "n": n}
    row.update(
        welch(runs[column], base)
        if pooler != "max" and len(base)
        else {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    )
    return row | {"final_mean": final_mean, "final_std": final_std, "select": select, "selected_by": selected_by}


def _difference(row) -> str:
    if math.isnan(row["diff"]):
        return ""
    if math.isnan(row["ci_low"]):
        return f"{row['diff']:+.2f}"
    return f"{row['diff']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def _p(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3g}"


COMPARISON = [*SETTING, "pooler", "mean", "std", "n", "diff", "ci_low", "ci_high", "p", "final_mean", "final_std",
              "select", "selected_by", "best"]  # fmt: skip


def _comparison(
    runs: pd.DataFrame, metric: str, poolers: list[str] | None = None, deck: bool = False
) -> tuple[pd.DataFrame, str]:
    """Per setting, each pooler (default options; all of them, or ``poolers``) with its difference
    to max, the best pooler marked; where the accuracy is the selected one, the final epoch's beside
    it; with ``deck``, the deck's number beside the deck's own setting (its CNN and recipe, 10
    epochs, no validation split)."""

    def build(frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, str]:
        rows = []
        for setting in _settings(frame):
            present = set(frame.loc[_in_setting(frame, setting), "pooler"])
            wanted = poolers or in_pooler_order(present)
            rows += [_compare_to_max(frame, setting, p, column) for p in wanted if p in present]
        numbers = mark_best(pd.DataFrame(rows, columns=COMPARISON[:-1]), SETTING)
        text = numbers[[*SETTING, "pooler"]].assign(
            **{
                "test accuracy % (mean ± std (n))": [
                    cell(r["mean"], r["std"], r["n"]) + best_mark(r) for _, r in numbers.iterrows()
                ],
                "vs max [95% CI]": [_difference(r) for _, r in numbers.iterrows()],
                "p (Welch)": [_p(r["p"]) for _, r in numbers.iterrows()],
            }
        )
        if column != "test_acc":
            text["final epoch's test accuracy %"] = [
                cell(r["final_mean"], r["final_std"], r["n"]) for _, r in numbers.iterrows()
            ]
        if deck:
            numbers["deck"] = [
                DECK.get(tuple(r), math.nan) for r in numbers[[*SETTING, "pooler"]].itertuples(index=False)
            ]
            text["deck (10 epochs, 1 run)"] = ["" if math.isnan(v) else f"{v:.2f}" for v in numbers.deck]
        return numbers, markdown(text)

    return by_validation(runs, metric, build)


def deck_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
    """Per setting, max and TDGS (default options): test accuracy, difference to max with Welch's
    95% CI and p-value, and the deck's number beside the deck's own setting."""
    return _comparison(default_runs(runs), metric, ["max", "tdgs"], deck=True)


def comparisons_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
    """The runs given a ``comparison`` name (scripts/tune.sh: each pooler at the configuration its
    own search chose), pooler against max pooling per name, whatever their options and recipes
    (the ``recipe`` column holds the name)."""
    s = runs.summaries
    if s.empty or "comparison" not in s or s.comparison.isna().all():
        return pd.DataFrame(), "(no runs)"
    named = s[s.comparison.notna()]
    return _comparison(named.assign(recipe=named.comparison), metric)


def _sweep_table(runs: Runs, option: str, metric: str) -> tuple[pd.DataFrame, str]:
    """TDGS test accuracy per setting and value of ``option`` (everything else at its default);
    the best value of each setting marked (:func:`mark_best`)."""
    s = runs.summaries
    columns = [*SETTING, option, "mean", "std", "n", "select", "selected_by", "best"]
    if s.empty or option not in s:
        return pd.DataFrame(columns=columns), "(no runs)"
    tdgs = s[(s.pooler == "tdgs") & s.apply(is_default, axis=1, vary=(option,))]
    tdgs = tdgs.assign(**{option: tdgs[option].fillna(TRAINER_DEFAULTS.get(option, math.nan))})  # runs from before it

    def build(frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, str]:
        rows = []
        for (*setting, value), group in frame.groupby([*SETTING, option]):
            mean, std, n = mean_std(group[column])
            select, selected_by = selection(group, column)
            rows.append({**dict(zip(SETTING, setting)), option: value, "mean": mean, "std": std, "n": n,
                         "select": select, "selected_by": selected_by})  # fmt: skip
        numbers = mark_best(pd.DataFrame(rows, columns=columns[:-1]), SETTING)
        cells = numbers.assign(
            text=[cell(r["mean"], r["std"], r["n"]) + best_mark(r) for _, r in numbers.iterrows()],
            setting=[setting_label(*key) for key in zip(*(numbers[k] for k in SETTING))],
        )
        wide = cells.pivot(index=option, columns="setting", values="text").reset_index()
        wide[option] = wide[option].map(lambda v: f"{v:g}")
        return numbers, markdown(wide.fillna(""))

    return by_validation(tdgs, metric, build)


def temperature_init_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
    """TDGS test accuracy per setting and initial temperature t0; the best t0 marked."""
    return _sweep_table(runs, "t0", metric)


def temperature_lr_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
    """TDGS test accuracy per setting and ``theta_lr_scale`` (the temperatures' learning rate over
    the network's); the best marked."""
    return _sweep_table(runs, "theta_lr_scale", metric)


def all_poolers_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
    """Every pooler (default options) per setting, with its difference to max; the best marked."""
    return _comparison(default_runs(runs), metric)


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


def learned_temperatures_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
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


def ablation_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
    """TDGS per setting and combination of normalize, eval_mode and granularity (t0 and the
    optimisation at their defaults): accuracy, the difference to TDGS's defaults over the same seeds
    with Welch's 95% CI and p-value, the best combination marked."""
    keys = [*SETTING, *ABLATION]
    columns = [*keys, "mean", "std", "n", "diff", "ci_low", "ci_high", "p", "select", "selected_by", "best"]
    s = runs.summaries
    if s.empty or not set(ABLATION) <= set(s):
        return pd.DataFrame(columns=columns), "(no runs)"
    tdgs = s[(s.pooler == "tdgs") & s.apply(is_default, axis=1, vary=ABLATION)]

    def build(frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, str]:
        defaults = frame[frame.apply(is_default, axis=1)]
        rows = []
        for key, group in frame.groupby(keys):
            base = defaults.loc[_in_setting(defaults, key[: len(SETTING)]) & defaults.seed.isin(group.seed), column]
            mean, std, n = mean_std(group[column])
            itself = group.index.isin(defaults.index).all()  # the defaults: not compared with themselves
            versus = welch([], []) if itself else welch(group[column], base)
            select, selected_by = selection(group, column)
            rows.append({**dict(zip(keys, key)), "mean": mean, "std": std, "n": n, **versus, "select": select,
                         "selected_by": selected_by})  # fmt: skip
        numbers = mark_best(pd.DataFrame(rows, columns=columns[:-1]), SETTING)
        text = numbers[keys].assign(
            **{
                "test accuracy % (mean ± std (n))": [
                    cell(r["mean"], r["std"], r["n"]) + best_mark(r) for _, r in numbers.iterrows()
                ],
                "vs TDGS defaults [95% CI]": [_difference(r) for _, r in numbers.iterrows()],
                "p (Welch)": [_p(r["p"]) for _, r in numbers.iterrows()],
            }
        )
        return numbers, markdown(text)

    return by_validation(tdgs, metric, build)


def configurations_table(runs: Runs, metric: str = "selected") -> tuple[pd.DataFrame, str]:
    """Every distinct configuration (the setting, the pooler and the options that vary): its best
    validation accuracy and test accuracy, mean +- std (n), and the test accuracy's difference to
    max pooling in the same setting (Welch's 95% CI, p); where the accuracy is the selected one, the
    final epoch's beside it. TDGS's settings beside its defaults (experiment=recipe_comparison's
    selected one) are compared with max pooling here."""
    s = runs.summaries
    if s.empty:
        return pd.DataFrame(), "(no runs)"
    varying = [o for o in (*OPTIONS, *DEFAULT_OPTIMISATION) if o in s and s[o].astype(str).nunique() > 1]
    keys = [*SETTING, "pooler", *varying]
    frame = s.assign(**{k: s[k].map(lambda v: "-" if pd.isna(v) else v) for k in varying})
    maxes = default_runs(runs)
    maxes = maxes[maxes.pooler == "max"]

    def build(part: pd.DataFrame, column: str) -> tuple[pd.DataFrame, str]:
        rows = []
        for values, group in part.groupby(keys, sort=True):
            mean, std, n = mean_std(group[column])
            final_mean, final_std, _ = mean_std(group.test_acc)
            val_mean, val_std, _ = mean_std(group.best_val_acc)
            base = maxes.loc[_in_setting(maxes, values[: len(SETTING)]), column]
            versus = welch(group[column], base) if values[len(SETTING)] != "max" else welch([], [])
            rows.append({**dict(zip(keys, values)), "mean": mean, "std": std, "n": n, **versus,
                         "final_mean": final_mean, "final_std": final_std, "val_mean": val_mean,
                         "val_std": val_std})  # fmt: skip
        numbers = pd.DataFrame(rows)
        text = numbers[keys].assign(
            **{
                "test accuracy % (mean ± std (n))": [cell(r["mean"], r["std"], r["n"]) for _, r in numbers.iterrows()],
                "vs max [95% CI]": [_difference(r) for _, r in numbers.iterrows()],
                "p (Welch)": [_p(r["p"]) for _, r in numbers.iterrows()],
            }
        )
        if column != "test_acc":
            text.insert(len(keys), "best validation accuracy %", [
                cell(r["val_mean"], r["val_std"], r["n"]) for _, r in numbers.iterrows()
            ])  # fmt: skip
            text["final epoch's test accuracy %"] = [
                cell(r["final_mean"], r["final_std"], r["n"]) for _, r in numbers.iterrows()
            ]
        return numbers, markdown(text)

    return by_validation(frame, metric, build)


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
    "comparisons": ("Named comparisons: each pooler at its own configuration (scripts/tune.sh)", comparisons_table),
    "configurations": ("Every configuration", configurations_table),
}
