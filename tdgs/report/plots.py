"""The report's figures (PNG): training curves, accuracy against t0, learned temperatures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from .collect import SETTING, Runs, default_runs, in_pooler_order, setting_label  # noqa: E402
from .tables import learned_temperatures  # noqa: E402


def _setting_name(dataset: str, model: str, epochs: int) -> str:
    """A setting in a file name: ``mnist_10ep``, ``mnist_resnet18_10ep`` (another network)."""
    return f"{dataset}{'' if model == 'deck_cnn' else '_' + model}_{epochs}ep"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(runs: Runs, path: Path) -> Path | None:
    """Per dataset: training loss and test accuracy per epoch, mean over seeds with a min-max band,
    one line per pooler (default options)."""
    s = default_runs(runs)
    if s.empty:
        return None
    m = runs.metrics.merge(s[["folder", "setting", "pooler"]], on="folder")
    datasets = sorted(m.setting.unique())
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 7), squeeze=False)
    for col, dataset in enumerate(datasets):
        d = m[m.setting == dataset]
        poolers = in_pooler_order(d.pooler)
        for pooler in poolers:
            for row, (metric, label) in enumerate((("train_loss", "training loss"), ("test_acc", "test accuracy (%)"))):
                per_epoch = d[d.pooler == pooler].groupby("epoch")[metric]
                mean, low, high = per_epoch.mean(), per_epoch.min(), per_epoch.max()
                n = d[d.pooler == pooler].folder.nunique()
                ax = axes[row][col]
                ax.plot(mean.index, mean.values, marker="o", markersize=3, label=f"{pooler} (n={n})")
                ax.fill_between(mean.index, low.values, high.values, alpha=0.2)
                ax.set_ylabel(label)
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
        axes[0][col].set_title(f"{dataset}: mean over seeds, band = min..max")
        axes[0][col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
        best = d[d.best].iloc[0]
        ax.scatter([best.t0], [best["mean"]], s=120, facecolors="none", edgecolors=line[0].get_color(), zorder=3)
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
    for (dataset, model, epochs, setting), d in t.groupby([*SETTING, "setting"]):
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
        paths.append(_save(fig, folder / f"temperatures_{_setting_name(dataset, model, epochs)}.png"))
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
    for (dataset, model, epochs, setting), d in t.groupby([*SETTING, "setting"]):
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
        paths.append(_save(fig, folder / f"temperature_trajectory_{_setting_name(dataset, model, epochs)}.png"))
    return paths
