"""Experiment loggers beside a run's CSV files (``logger=[csv,tensorboard,mlflow]``): each finished
epoch's metrics and learning rate, TDGS's temperatures per layer (quantiles; TensorBoard also their
histogram), the configuration and final metrics. Values are taken from the epoch's metrics.csv row
and the model once per epoch, after its checkpoint: no per-step host sync, CUDA graphs untouched.
A resumed run logs each epoch exactly once: TensorBoard hides what a stopped attempt logged from the
resumed epoch on (``purge_step``) and that epoch is logged again; MLflow continues the run it began
(its id kept in the run folder) and logs the epochs it lacks.

``csv`` is the run folder's own files (summary.csv, metrics.csv, temperatures.csv), always written."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .results import CONFIG, METRICS, SUMMARY, TEMPERATURES, write_text_atomic
from .summaries import poolers

LOGGERS = ("csv", "tensorboard", "mlflow")
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the pip extra that installs it
TENSORBOARD_DIR = "tensorboard"  # in the run folder
MLFLOW_RUN = "mlflow_run.json"  # in the run folder: the MLflow run this one logs to
FINAL = ("test_acc", "best_val_acc", "test_acc_at_best_val", "val_acc", "train_seconds")  # final metrics logged


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists and None as strings."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def _number(value) -> float | None:
    """A finite float, else None (NaN: nothing to log)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def final_metrics(summary: dict) -> dict[str, float]:
    """The run's :data:`FINAL` summary values that are numbers."""
    return {k: v for k, v in ((k, _number(summary.get(k))) for k in FINAL) if v is not None}


def epoch_scalars(row: dict) -> dict[str, float]:
    """A metrics.csv row's logged values: every finite number but the epoch, by its column name."""
    return {k: v for k, v in ((k, _number(v)) for k, v in row.items() if k != "epoch") if v is not None}


class TensorBoard:
    """Event files in ``run_dir/tensorboard``: scalars named as in metrics.csv, grouped (``loss/val``,
    ``accuracy/test``, ``lr``, ``temperature/pool1/median``), a histogram of each TDGS layer's
    temperatures, and the configuration with the final metrics for the HParams dashboard."""

    def __init__(self, run_dir: Path, resumed_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = run_dir / TENSORBOARD_DIR
        self.fresh = not folder.is_dir()  # a run resumed with this logger new to it: its epochs so far too
        # a resumed run hides what a stopped attempt logged from the resumed epoch on, then logs it again
        self.writer = SummaryWriter(folder, purge_step=resumed_epoch or None)

    def log_epoch(self, row: dict, model: torch.nn.Module | None) -> None:
        """The epoch's scalars, and with ``model`` (as it ended that epoch) its temperatures' histograms."""
        epoch = int(row["epoch"])
        for key, value in epoch_scalars(row).items():
            self.writer.add_scalar(self.tag(key), value, epoch)
        for layer, pool in enumerate(poolers(model) if model is not None else [], 1):
            if hasattr(pool, "temperature"):
                self.writer.add_histogram(f"temperature/pool{layer}", pool.temperature.detach().float().cpu(), epoch)
        self.writer.flush()

    @staticmethod
    def tag(column: str) -> str:
        """metrics.csv's ``val_acc`` -> ``accuracy/val``, ``pool1_T_median`` -> ``temperature/pool1/median``."""
        split, _, kind = column.partition("_")
        if kind in ("loss", "acc"):
            return f"{'accuracy' if kind == 'acc' else 'loss'}/{split}"
        if column.startswith("pool") and "_T_" in column:
            layer, stat = column.split("_T_")
            return f"temperature/{layer}/{stat}"
        if column.startswith("pool"):
            layer, stat = column.split("_", 1)
            return f"{stat}/{layer}"
        return column

    def finish(self, config: dict, summary: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {k: v for k, v in flatten(config).items() if not k.startswith(("paths.", "logger."))}
        final = {f"final/{k}": v for k, v in final_metrics(summary).items()}
        for summary_proto in hparams(values, final):  # the experiment, its start and end: this run's HParams
            self.writer.file_writer.add_summary(summary_proto)
        for key, value in final.items():
            self.writer.add_scalar(key, value)

    def close(self) -> None:
        self.writer.close()


class MLflow:
    """One MLflow run per run, named after its folder, in the experiment named after the folder the
    run lies in (its sweep; ``logger.mlflow.experiment_name`` to choose), in a local SQLite store
    (``outputs/mlflow.db``, artifacts in ``outputs/mlartifacts``) unless ``logger.mlflow.tracking_uri``
    says otherwise: the flattened configuration as parameters, each epoch's metrics at step = epoch,
    the run folder's CSV files and config.yaml as artifacts."""

    def __init__(self, run_dir: Path, options: DictConfig, config: dict, output_dir: Path) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        output_dir = output_dir.resolve()
        uri = options.get("tracking_uri") or f"sqlite:///{output_dir / 'mlflow.db'}"
        output_dir.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        saved = run_dir / MLFLOW_RUN
        if saved.is_file():  # a resumed run: the MLflow run it began
            self.run_id = json.loads(saved.read_text())["run_id"]
            self.logged = {int(m.step) for m in self.client.get_metric_history(self.run_id, "train_loss")}
            return
        name = options.get("experiment_name") or run_dir.resolve().parent.name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(name, artifact_location=str(output_dir / "mlartifacts" / name))
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        write_text_atomic(saved, json.dumps({"tracking_uri": uri, "run_id": self.run_id}))
        self.logged: set[int] = set()

    def log_epoch(self, row: dict, model: torch.nn.Module | None) -> None:
        from mlflow.entities import Metric

        epoch = int(row["epoch"])
        if epoch in self.logged:
            return
        now = int(1000 * time.time())
        metrics = [Metric(k, v, now, epoch) for k, v in epoch_scalars(row).items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        self.logged.add(epoch)

    def finish(self, config: dict, summary: dict) -> None:
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        final = [
            Metric(f"final_{k}", v, now, 0) for k, v in ((k, _number(summary.get(k))) for k in FINAL) if v is not None
        ]
        self.client.log_batch(self.run_id, metrics=final)
        for name in (SUMMARY, METRICS, TEMPERATURES, CONFIG):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id)

    def close(self) -> None:
        pass


def check_loggers(names) -> None:
    """Every logger known and its package installed, or a one-line ConfigError naming the extra."""
    import importlib.util

    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"logger must be a list of {', '.join(map(repr, LOGGERS))}, but got {name!r}")
        module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"logger={name} needs the {module} package, which is not installed: pip install 'tdgs[{EXTRAS[name]}]'"
            )


def open_loggers(cfg: DictConfig, run_dir: Path, resumed_epoch: int, metrics: list[dict], model) -> list:
    """The loggers ``cfg.logger`` names (csv aside: its files are the run's own), continuing a run
    resumed after ``resumed_epoch`` (0: a new run) whose finished epochs are ``metrics``."""
    names = list(cfg.get("logger") or {})
    config = OmegaConf.to_container(cfg, resolve=True)
    loggers = []
    if "tensorboard" in names:
        loggers.append(TensorBoard(run_dir, resumed_epoch))
    if "mlflow" in names:
        loggers.append(MLflow(run_dir, cfg.logger.mlflow, config, Path(cfg.paths.output_dir)))
    for logger in loggers:  # the resumed epoch again (TensorBoard), or the epochs a logger lacks
        rows = metrics[-1:] if isinstance(logger, TensorBoard) and not logger.fresh else metrics
        for row in rows:
            logger.log_epoch(row, model if row is metrics[-1] else None)  # the model is the last epoch's
    return loggers
