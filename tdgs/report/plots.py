"""The report's figures (PNG): training curves, accuracy against t0, learned temperatures."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from .collect import SETTING, Runs, default_runs, in_pooler_order, setting_label  # noqa: E402
from .tables import learned_temperatures  # noqa: E402


def _setting_name(dataset: str, model: str, epochs: int, recipe: str, validation: str) -> str:
    """A setting in a file name: ``mnist_10ep`` (the deck's CNN and recipe, no validation split),
    ``mnist_resnet18_30ep_modern_val10`` (another network, recipe and a 10% validation split)."""
    name = f"{dataset}{'' if model == 'deck_cnn' else '_' + model}_{epochs}ep"
    if recipe != "default":
        name += "_" + re.sub(r"[^A-Za-z0-9.]+", "_", recipe).strip("_")
    if validation != "no validation":
        name += "_" + re.sub(r"[^A-Za-z0-9.]+", "", validation)
    return name


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(runs: Runs, path: Path) -> Path | None:
    """Per setting: training loss, and test accuracy (validation accuracy dashed) per epoch, mean
    over seeds with a min-max band, one colour per pooler (default options)."""
    s = default_runs(runs)
    if s.empty:
        return None
    m = runs.metrics.merge(s[["folder", "setting", "pooler"]], on="folder")
    settings = sorted(m.setting.unique())
    fig, axes = plt.subplots(2, len(settings), figsize=(5 * len(settings), 7), squeeze=False)
    panels = (("train_loss", "training loss", "-"), ("test_acc", "accuracy (%): test, validation dashed", "-"))
    panels += (("val_acc", None, "--"),) if "val_acc" in m else ()
    for col, setting in enumerate(settings):
        d = m[m.setting == setting]
        for number, pooler in enumerate(in_pooler_order(d.pooler)):
            runs_of = d[d.pooler == pooler]
            n = runs_of.folder.nunique()
            for metric, label, style in panels:
                per_epoch = runs_of.groupby("epoch")[metric]
                mean, low, high = per_epoch.mean(), per_epoch.min(), per_epoch.max()
                if mean.isna().all():
                    continue
                ax = axes[0 if metric == "train_loss" else 1][col]
                label_ = None if metric == "val_acc" else f"{pooler} (n={n})"
                ax.plot(mean.index, mean.values, style, marker="o", markersize=3, color=f"C{number}", label=label_)
                ax.fill_between(mean.index, low.values, high.values, alpha=0.15, color=f"C{number}")
                ax.set_ylabel(label or ax.get_ylabel())
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
        axes[0][col].set_title(f"{setting}\nmean over seeds, band = min..max", fontsize=9)
        axes[0][col].legend(fontsize=8)
    return _save(fig, path)


def accuracy_vs_t0(numbers: pd.DataFrame, path: Path) -> Path | None:
    """TDGS test accuracy against t0 (log scale), mean +- std over seeds, per setting."""
    if numbers.empty or numbers.t0.nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for setting, d in numbers.groupby(SETTING):
        d = d.sort_values("t0")
        line = ax.errorbar(
            d.t0, d["mean"], yerr=d["std"].fillna(0), marker="o", capsize=3, label=setting_label(*setting)
        )
        for best in d[d.best].itertuples():  # none where nothing could be chosen
            ax.scatter([best.t0], [best.mean], s=120, facecolors="none", edgecolors=line[0].get_color(), zorder=3)
    ax.set_xscale("log")
    ax.set_xticks(sorted(numbers.t0.unique()))
    ax.set_xticklabels([f"{v:g}" for v in sorted(numbers.t0.unique())])
    ax.set_xlabel("initial temperature t0 (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("TDGS: accuracy against t0 (mean ± std; circle = best)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def temperature_histograms(runs: Runs, folder: Path) -> list[Path]:
    """Per setting (dataset, network, epochs): histograms of the learned temperatures of each pool layer (TDGS, default
    options), log-spaced bins, T = 1 marked."""
    t, s = runs.temperatures, default_runs(runs)
    if t.empty or s.empty:
        return []
    t = t.merge(s[["folder", *SETTING, "setting"]], on="folder")
    paths = []
    for (*key, setting), d in t.groupby([*SETTING, "setting"]):
        layers = sorted(d.layer.unique())
        fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False)
        low, high = max(d.temperature.min(), 1e-3), max(d.temperature.max(), 1.01)
        bins = np.logspace(np.log10(low) - 0.05, np.log10(high) + 0.05, 40)
        for ax, layer in zip(axes[0], layers):
            values = d[d.layer == layer].temperature
            ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
            ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.5, 1, 2: not 10^0
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
            below = 100 * (values < 1).mean()
            ax.set_title(f"pool {layer}: {below:.0f}% max-like (T < 1)", fontsize=10)
            ax.set_xlabel("learned temperature T (log scale)")
        axes[0][0].set_ylabel("count")
        fig.suptitle(f"{setting}: learned TDGS temperatures ({d.folder.nunique()} runs)")
        paths.append(_save(fig, folder / f"temperatures_{_setting_name(*key)}.png"))
    return paths


def _trajectory(metrics: pd.DataFrame, initial: pd.DataFrame, layer: int) -> pd.DataFrame:
    """Per epoch (0 = before training): the median and quartiles of a layer's T, each the mean
    over the runs of that run's statistic."""
    columns = {f"pool{layer}_T_{q}": q for q in ("q25", "median", "q75")}
    per_epoch = metrics.reindex(columns=["epoch", *columns]).rename(columns=columns).groupby("epoch").mean()
    start = initial.groupby("folder").initial.quantile([0.25, 0.5, 0.75]).unstack().mean()
    first = pd.DataFrame({"q25": [start[0.25]], "median": [start[0.5]], "q75": [start[0.75]]}, index=[0])
    return pd.concat([first, per_epoch])


def temperature_trajectories(runs: Runs, folder: Path) -> list[Path]:
    """Per setting: each pool layer's T over the epochs (median, band = quartiles, epoch 0 = the
    initial draw), one line per ``theta_lr_scale`` (TDGS, default options)."""
    t = learned_temperatures(runs)
    if t.empty or t.initial.isna().all():
        return []
    paths = []
    for (*key, setting), d in t.groupby([*SETTING, "setting"]):
        layers = sorted(d.layer.unique())
        fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False)
        for ax, layer in zip(axes[0], layers):
            for scale, g in d[d.layer == layer].groupby("theta_lr_scale"):
                m = runs.metrics[runs.metrics.folder.isin(g.folder.unique())]
                path = _trajectory(m, g, layer)
                label = f"theta_lr_scale {scale:g} (n={g.folder.nunique()})"
                ax.plot(path.index, path["median"], marker="o", markersize=3, label=label)
                ax.fill_between(path.index, path.q25, path.q75, alpha=0.2)
            ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
            ax.set_title(f"pool {layer}", fontsize=10)
            ax.set_xlabel("epoch (0 = initial)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("temperature T: median, band = quartiles")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{setting}: TDGS temperatures during training")
        paths.append(_save(fig, folder / f"temperature_trajectory_{_setting_name(*key)}.png"))
    return paths
