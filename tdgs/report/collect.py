"""Find run folders and read them into tables; every folder that cannot count is kept as a
problem with its reason, never silently dropped."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ..config import DATASET_SCHEMAS, POOLER_SCHEMAS, TrainerConfig
from ..pooling import POOLERS
from ..results import CONFIG, METRICS, SUMMARY, TEMPERATURES
from ..train import TRAINER_COLUMNS

# pooler options as summary.csv columns (tdgs.train.pooler_columns): every pooler's, from their schemas
_ALL_OPTIONS = dict.fromkeys(f.name for s in POOLER_SCHEMAS.values() for f in fields(s) if f.name != "name")
OPTIONS = tuple(sorted(_ALL_OPTIONS, key=lambda o: o in ("kernel_size", "stride", "padding")))  # the window last
# the optimisation: a run is a default run only with these at their defaults
TRAINER_DEFAULTS = {f.name: f.default for f in fields(TrainerConfig) if f.name in (*TRAINER_COLUMNS, "precision")}
SETTING = ["dataset", "model", "epochs"]  # runs that differ in these are never pooled


def in_pooler_order(names) -> list[str]:
    """``names`` in the registry's order (max, avg, mixed, gated, stochastic, s3, tdgs), others after."""
    names = set(names)
    return [p for p in POOLERS if p in names] + sorted(names - set(POOLERS))


@dataclass
class Runs:
    """Everything below the report's roots."""

    summaries: pd.DataFrame  # completed runs: folder, dataset, pooler, seed, options, test_acc, ...
    metrics: pd.DataFrame  # per epoch of those runs: folder, epoch, train_loss, test_acc, ...
    temperatures: pd.DataFrame  # TDGS temperatures of those runs: folder, layer, temperature (learned), initial
    problems: pd.DataFrame  # folder, problem: runs that failed, stopped early or cannot be read
    duplicates: pd.DataFrame  # folder, kept, test_acc, kept_test_acc: runs of a (configuration, seed) counted once


def run_folders(roots: list[Path]) -> list[Path]:
    """Folders holding any of a run's files (Hydra's own ``.hydra`` folders excluded)."""
    found = set()
    for root in roots:
        for name in (SUMMARY, METRICS, CONFIG):
            found.update(p.parent for p in Path(root).rglob(name) if ".hydra" not in p.parts)
    return sorted(found)


def default_options(pooler: str) -> dict:
    """The option values a pooler's config group sets by default (``t0=1.0``, ...)."""
    schema = POOLER_SCHEMAS.get(pooler)
    return {} if schema is None else {f.name: f.default for f in fields(schema) if f.name in OPTIONS}


def _read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    if frame.empty:
        raise ValueError("no rows")
    return frame


def configuration_key(folder: Path) -> str:
    """A run's configuration and length, from its config.yaml, as sorted JSON: the dataset and its
    options (not where it lives), the network, the pooler and every option, the optimisation
    (:data:`TRAINER_DEFAULTS`) and ``trainer.epochs``; options an older config.yaml lacks take
    today's defaults. Not the device, compile mode or determinism: they change how, not what, is
    computed. A run whose config.yaml cannot be read is a configuration of its own."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(folder / CONFIG), resolve=True)
        dataset, pooler, trainer = cfg["dataset"], cfg["pooler"], cfg["trainer"]
        data_defaults = {f.name: f.default for f in fields(DATASET_SCHEMAS[dataset["name"]]) if f.name not in _WHERE}
        key = {
            "dataset": data_defaults | {k: v for k, v in dataset.items() if k not in _WHERE},
            "model": cfg.get("model", {}).get("name", "deck_cnn"),
            "pooler": default_options(pooler["name"]) | pooler,
            "trainer": TRAINER_DEFAULTS | {k: trainer[k] for k in (*TRAINER_DEFAULTS, "epochs") if k in trainer},
        }
        return json.dumps(key, sort_keys=True, default=str)
    except Exception:  # copied without it, or unreadable: never merged with another run
        return f"unknown configuration: {folder}"


_WHERE = ("root", "source", "download")  # dataset options that say where the data lives, not what it is
DUPLICATES = ["folder", "kept", "test_acc", "kept_test_acc"]


def merge_duplicates(runs: Runs) -> Runs:
    """Count each (configuration, seed) once: the first of its folders (in path order) is kept, the
    others are listed in ``duplicates`` (several experiments share runs, e.g. TDGS t0 = 1 seed 0)."""
    s = runs.summaries
    if s.empty:
        return runs
    repeated = s.duplicated(["configuration", "seed"])
    kept = s[~repeated].set_index(["configuration", "seed"])
    dropped = s[repeated]
    first = kept.loc[list(zip(dropped.configuration, dropped.seed))]
    duplicates = pd.DataFrame(
        {"folder": dropped.folder, "kept": first.folder.to_numpy(), "test_acc": dropped.test_acc,
         "kept_test_acc": first.test_acc.to_numpy()}, columns=DUPLICATES,
    )  # fmt: skip
    keep = set(s.folder[~repeated])
    return Runs(
        summaries=s[~repeated].reset_index(drop=True),
        metrics=runs.metrics[runs.metrics.folder.isin(keep)] if len(runs.metrics) else runs.metrics,
        temperatures=runs.temperatures[runs.temperatures.folder.isin(keep)]
        if len(runs.temperatures)
        else runs.temperatures,
        problems=runs.problems,
        duplicates=duplicates.reset_index(drop=True),
    )


def collect(roots: list[Path]) -> Runs:
    """Read every run folder below ``roots``; runs of one configuration and seed count once
    (:func:`merge_duplicates`)."""
    summaries, metrics, temperatures, problems = [], [], [], []
    for folder in run_folders(roots):
        name = str(folder)
        if not (folder / SUMMARY).exists():
            problems.append({"folder": name, "problem": "no summary.csv (still running, or killed)"})
            continue
        try:
            summary = _read_csv(folder / SUMMARY).iloc[0].to_dict()
            missing = {"dataset", "pooler", "seed", "test_acc", "status"} - set(summary)
            if missing:
                raise ValueError(f"missing columns {', '.join(sorted(missing))}")
        except Exception as error:  # corrupt or half-written: report it, go on
            problems.append({"folder": name, "problem": f"unreadable summary.csv ({type(error).__name__}: {error})"})
            continue
        if summary["status"] != "completed":
            error = summary.get("error")
            detail = f": {error}" if isinstance(error, str) and error else ""
            problems.append({"folder": name, "problem": f"status {summary['status']}{detail}"})
            continue
        try:
            epochs = _read_csv(folder / METRICS)
        except Exception as error:
            problems.append(
                {"folder": name, "problem": f"completed, but metrics.csv unreadable ({type(error).__name__}: {error})"}
            )
            continue
        summary = {"folder": name, "model": "deck_cnn", **summary}  # runs from before model= had the deck's CNN
        summaries.append({**summary, "configuration": configuration_key(folder)})
        metrics.append(epochs.assign(folder=name))
        if summary["pooler"] == "tdgs":
            try:
                temperatures.append(_read_csv(folder / TEMPERATURES).assign(folder=name))
            except Exception as error:
                problems.append(
                    {"folder": name, "problem": f"temperatures.csv unreadable ({type(error).__name__}: {error})"}
                )
    runs = Runs(
        summaries=pd.DataFrame(summaries),
        metrics=pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(),
        temperatures=pd.concat(temperatures, ignore_index=True) if temperatures else pd.DataFrame(),
        problems=pd.DataFrame(problems, columns=["folder", "problem"]),
        duplicates=pd.DataFrame(columns=DUPLICATES),
    )
    return merge_duplicates(runs)


def is_default(row: pd.Series, vary: tuple[str, ...] = ()) -> bool:
    """Whether a run used its pooler's default options and the default optimisation (any value of
    the options in ``vary``)."""
    for option, default in (default_options(row["pooler"]) | TRAINER_DEFAULTS).items():
        value = None if option in vary else row.get(option)
        if value is None or pd.isna(value):
            continue
        if isinstance(default, float) or isinstance(value, float):
            if abs(float(value) - float(default)) > 1e-12:
                return False
        elif str(value) != str(default):
            return False
    return True


def setting_label(dataset: str, model: str, epochs: int) -> str:
    """ "mnist, 10 epochs" (the deck's CNN), "cifar10, resnet18, 10 epochs" (another network)."""
    network = "" if model == "deck_cnn" else f"{model}, "
    return f"{dataset}, {network}{epochs} epoch{'s' * (epochs != 1)}"


def default_runs(runs: Runs, vary: tuple[str, ...] = ()) -> pd.DataFrame:
    """The completed runs that used the defaults (:func:`is_default`, but ``vary``), with a
    ``setting`` label (:func:`setting_label`): runs on other data, networks or lengths are never pooled."""
    s = runs.summaries
    if s.empty:
        return s
    s = s[s.apply(is_default, axis=1, vary=vary)]
    return s.assign(setting=[setting_label(*key) for key in zip(s.dataset, s.model, s.epochs)])
