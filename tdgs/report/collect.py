"""Find run folders and read them into tables; every folder that cannot count is kept as a
problem with its reason, never silently dropped."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ..conf_dir import CONF_DIR
from ..results import CONFIG, METRICS, SUMMARY, TEMPERATURES
from .schema import DATASET_DEFAULTS, POOLER_DEFAULTS, POOLERS, TRAINER_COLUMNS
from .schema import TRAINER_DEFAULTS as _TRAINER

# pooler options as summary.csv columns (tdgs.train.pooler_columns): every pooler's, from their schemas
_ALL_OPTIONS = dict.fromkeys(option for defaults in POOLER_DEFAULTS.values() for option in defaults)
OPTIONS = tuple(sorted(_ALL_OPTIONS, key=lambda o: o in ("kernel_size", "stride", "padding")))  # the window last
# the optimisation's defaults (the deck's recipe), for summaries and config.yaml files from before an option existed
TRAINER_DEFAULTS = {k: v for k, v in _TRAINER.items() if k in (*TRAINER_COLUMNS, "precision")}
RECIPE = tuple(k for k in TRAINER_COLUMNS if k != "theta_lr_scale")  # how a network is trained: part of its setting
DEFAULT_OPTIMISATION = ("theta_lr_scale", "precision")  # a default run has these at their defaults too
# a run's validation split and inputs, as summary.csv and config.yaml files from before validation had them
BEFORE_VALIDATION = {"val_size": 0, "split_seed": 0, "normalize_inputs": False, "train_size": math.nan}
SETTING = ["dataset", "model", "epochs", "recipe", "validation"]  # runs that differ in these are never pooled


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
    return dict(POOLER_DEFAULTS.get(pooler, {}))


def _read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    if frame.empty:
        raise ValueError("no rows")
    return frame


def configuration_key(folder: Path, held_out: int | None = None) -> str:
    """A run's configuration and length, from its config.yaml, as sorted JSON: the dataset and its
    options (not where it lives; its validation split), the network, the pooler and every option,
    the optimisation (:data:`TRAINER_DEFAULTS`) and ``trainer.epochs``; options an older
    config.yaml lacks take the values it ran with (today's defaults, but no validation split).
    The validation split is the number of images ``held_out`` (summary.csv's ``val_size``: a
    fraction and its count are one split) and its seed, or nothing when none is held out. Not the
    device, compile mode or determinism: they change how, not what, is computed. A run whose
    config.yaml cannot be read is a configuration of its own."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(folder / CONFIG))  # written resolved
        dataset, pooler, trainer = cfg["dataset"], cfg["pooler"], cfg["trainer"]
        data_defaults = {k: v for k, v in DATASET_DEFAULTS[dataset["name"]].items() if k not in _WHERE}
        data_defaults |= {"val_size": 0, "normalize": False}  # what a config.yaml without them ran
        data = data_defaults | {k: v for k, v in dataset.items() if k not in _WHERE}
        data["val_size"] = data["val_size"] if held_out is None or pd.isna(held_out) else int(held_out)
        if not data["val_size"]:
            data = {k: v for k, v in data.items() if k not in ("val_size", "split_seed")}
        key = {
            "dataset": data,
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
         "kept_test_acc": first.test_acc.to_numpy()}
    )  # fmt: skip
    keep = set(s.folder[~repeated])
    return Runs(
        summaries=s[~repeated].reset_index(drop=True),
        metrics=runs.metrics[runs.metrics.folder.isin(keep)],  # one table per summary: never empty here
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
        summaries.append({**summary, "configuration": configuration_key(folder, summary.get("val_size"))})
        metrics.append(epochs.assign(folder=name))
        if summary["pooler"] == "tdgs":
            try:
                temperatures.append(_read_csv(folder / TEMPERATURES).assign(folder=name))
            except Exception as error:
                problems.append(
                    {"folder": name, "problem": f"temperatures.csv unreadable ({type(error).__name__}: {error})"}
                )
    runs = Runs(
        summaries=with_setting(pd.DataFrame(summaries)),
        metrics=pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(),
        temperatures=pd.concat(temperatures, ignore_index=True) if temperatures else pd.DataFrame(),
        problems=pd.DataFrame(problems, columns=["folder", "problem"]),
        duplicates=pd.DataFrame(columns=DUPLICATES),
    )
    return merge_duplicates(runs)


def known_recipes() -> dict[str, dict]:
    """The recipes of ``conf/trainer/`` (``default``: the deck's; ``modern``), their :data:`RECIPE` values."""
    recipes = {}
    for path in sorted(Path(CONF_DIR, "trainer").glob("*.yaml"), key=lambda p: p.stem != "default"):
        values = OmegaConf.to_container(OmegaConf.load(path))
        recipes[path.stem] = {k: values.get(k, TRAINER_DEFAULTS[k]) for k in RECIPE}
    return recipes


def _same(value, reference) -> bool:
    if reference is None or (isinstance(value, float) and math.isnan(value)):
        return reference is None and (value is None or (isinstance(value, float) and math.isnan(value)))
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        return abs(float(value) - float(reference)) <= 1e-12
    return str(value) == str(reference)


def recipe_label(row: pd.Series, recipes: dict[str, dict]) -> str:
    """The recipe a run was trained with: the name of the closest of ``recipes`` and what differs
    (``modern``, ``default + lr=0.01``), ``+ normalized inputs`` with ``dataset.normalize``."""
    differences = {
        name: [
            f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
            for k in RECIPE
            if not _same(row[k], v[k])
        ]
        for name, v in recipes.items()
    }
    name = min(differences, key=lambda n: len(differences[n]))  # ties: the first, the deck's
    extra = differences[name] + (["normalized inputs"] if row["normalize_inputs"] else [])  # gaps: False
    return " + ".join([name, ", ".join(extra)]) if extra else name


def validation_label(row: pd.Series) -> str:
    """``no validation``, or the images held out of the training set (``val 6000 of 60000``), with
    the split's seed when not 0."""
    if not row["val_size"] > 0:
        return "no validation"
    held, whole = int(row["val_size"]), int(row["val_size"] + row["train_size"])
    return f"val {held} of {whole}" + (f" (split seed {int(row['split_seed'])})" if row["split_seed"] else "")


def with_setting(summaries: pd.DataFrame) -> pd.DataFrame:
    """The summaries with what older ones lack filled in (the deck's recipe, no validation split)
    and the ``recipe`` and ``validation`` labels of :data:`SETTING`."""
    if summaries.empty:
        return summaries
    filled = TRAINER_DEFAULTS | BEFORE_VALIDATION
    s = summaries.assign(**{k: summaries[k] if k in summaries else v for k, v in filled.items()})
    s = s.fillna({k: v for k, v in filled.items() if v is not None and not (isinstance(v, float) and math.isnan(v))})
    for column in ("test_acc_at_best_val", "best_val_acc", "val_acc"):
        s[column] = s[column] if column in s else math.nan
    recipes = known_recipes()
    return s.assign(recipe=s.apply(recipe_label, axis=1, recipes=recipes), validation=s.apply(validation_label, axis=1))


def is_default(row: pd.Series, vary: tuple[str, ...] = ()) -> bool:
    """Whether a run used its pooler's default options and the default temperature learning rate
    and precision (any value of the options in ``vary``); its recipe is its setting's."""
    defaults = {k: TRAINER_DEFAULTS[k] for k in DEFAULT_OPTIMISATION}
    for option, default in (default_options(row["pooler"]) | defaults).items():
        value = None if option in vary else row.get(option)
        if value is None or pd.isna(value):
            continue
        if isinstance(default, float) or isinstance(value, float):
            if abs(float(value) - float(default)) > 1e-12:
                return False
        elif str(value) != str(default):
            return False
    return True


def setting_label(dataset: str, model: str, epochs: int, recipe: str, validation: str) -> str:
    """ "mnist, 10 epochs, default, no validation" (the deck's CNN), "cifar10, resnet18, 30 epochs,
    modern, val 10%" (another network)."""
    network = "" if model == "deck_cnn" else f"{model}, "
    return f"{dataset}, {network}{epochs} epoch{'s' * (epochs != 1)}, {recipe}, {validation}"


def default_runs(runs: Runs, vary: tuple[str, ...] = ()) -> pd.DataFrame:
    """The completed runs that used the defaults (:func:`is_default`, but ``vary``), with a
    ``setting`` label (:func:`setting_label`): runs on other data, networks, lengths, recipes or
    validation splits are never pooled."""
    s = runs.summaries
    if s.empty:
        return s
    s = s[s.apply(is_default, axis=1, vary=vary)]
    return s.assign(setting=[setting_label(*key) for key in zip(*(s[k] for k in SETTING))])
