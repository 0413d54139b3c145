"""Experiment loggers beside a run's CSV files (``logger=[csv,tensorboard,mlflow]``): each finished
epoch's metrics and learning rate, TDGS's temperatures per layer (quantiles; TensorBoard also their
histogram), the configuration and final metrics. Values are taken from the epoch's metrics.csv row
and the model once per epoch, after its checkpoint: no per-step host sync, CUDA graphs untouched.
A resumed run logs each epoch exactly once: TensorBoard hides what a stopped attempt logged from the
resumed epoch on (``purge_step``) and that epoch is logged again; MLflow continues the run it began
(its id and store kept in the run folder) and logs the epochs it lacks. The final metrics are logged
at the last epoch's step, once, by the invocation that completes the run. A logger that fails warns
once and logs nothing more for that run: logging never stops training.

``csv`` is the run folder's own files (summary.csv, metrics.csv, temperatures.csv), always written."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, describe
from .results import CONFIG, METRICS, SUMMARY, TEMPERATURES, write_csv_atomic, write_text_atomic
from .summaries import poolers

log = logging.getLogger(__name__)

EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the package and pip extra it needs
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
    temperatures, and for the HParams dashboard the run's configuration and final metrics (its
    session only: the dashboard then takes its columns from every run of a sweep)."""

    name = "tensorboard"

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

    def finish(self, config: dict, summary: dict, files: list[Path]) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {k: v for k, v in flatten(config).items() if not k.startswith(("paths.", "logger."))}
        final = {f"final/{k}": v for k, v in final_metrics(summary).items()}
        _, start, end = hparams(values, final)  # not the experiment summary: the dashboard builds it from all runs
        for proto in (start, end):
            self.writer.file_writer.add_summary(proto)
        for key, value in final.items():
            self.writer.add_scalar(key, value, int(summary["epochs_done"]))
        self.writer.flush()

    def close(self, error: BaseException | None) -> None:
        self.writer.close()


def experiment_name(run_dir: Path, output_dir: Path) -> str:
    """A run's MLflow experiment: the folder it lies in (its sweep), as a path below the output
    folder (``sweeps/2026-12-04_10-00-00``, ``tune/digits/search_tdgs``), else that folder's name."""
    folder = run_dir.resolve().parent
    try:
        below = folder.relative_to(output_dir.resolve())
    except ValueError:  # elsewhere
        return folder.name
    return below.as_posix() if below.parts else folder.name


def mlflow_store(options: DictConfig, output_dir: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location root): the options' URI, or a SQLite store in the output
    folder with its artifacts beside it."""
    if options.get("tracking_uri"):
        return options.tracking_uri, None
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{output_dir / 'mlflow.db'}", str(output_dir / "mlartifacts")


def mlflow_experiment(client, name: str, artifacts: str | None) -> str:
    """The id of experiment ``name``, created if there is none (another job may create it first)."""
    from mlflow.exceptions import MlflowException

    for _ in range(2):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifacts and f"{artifacts}/{name}")
        except MlflowException:  # created by a job beside this one in the meantime: found next time
            continue
    raise RuntimeError(f"cannot create or find the MLflow experiment {name!r}")


class MLflow:
    """One MLflow run per run, named after its folder, in the experiment of the folder the run lies
    in (:func:`experiment_name`; ``logger.mlflow.experiment_name`` to choose), in a local SQLite
    store (``outputs/mlflow.db``, artifacts in ``outputs/mlartifacts``) unless
    ``logger.mlflow.tracking_uri`` says otherwise: the flattened configuration as parameters
    (values a resume changes as ``resumed_with.<key>`` tags), each epoch's metrics at step = epoch,
    the final metrics and the run folder's CSV files and config.yaml as artifacts."""

    name = "mlflow"

    def __init__(self, run_dir: Path, options: DictConfig, config: dict, output_dir: Path) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.run_dir, self.finished = run_dir, False
        saved = run_dir / MLFLOW_RUN
        if saved.is_file():  # a resumed run: the MLflow run it began, in the store it began it in
            began = json.loads(saved.read_text())
            self.client, self.run_id = MlflowClient(tracking_uri=began["tracking_uri"]), began["run_id"]
            self.logged = {int(m.step) for m in self.client.get_metric_history(self.run_id, "train_loss")}
            before = self.client.get_run(self.run_id).data.params
            for key, value in flatten(config).items():
                if key in before and before[key] != str(value)[:6000]:
                    self.client.set_tag(self.run_id, f"resumed_with.{key}", str(value)[:5000])
            return
        uri, artifacts = mlflow_store(options, output_dir)
        self.client = MlflowClient(tracking_uri=uri)
        name = options.get("experiment_name") or experiment_name(run_dir, output_dir)
        self.run_id = self.client.create_run(
            mlflow_experiment(self.client, name, artifacts), run_name=run_dir.name
        ).info.run_id
        write_text_atomic(
            saved, json.dumps({"tracking_uri": uri, "run_id": self.run_id})
        )  # at once: never a second run
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
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

    def finish(self, config: dict, summary: dict, files: list[Path]) -> None:
        from mlflow.entities import Metric

        step, now = int(summary["epochs_done"]), int(1000 * time.time())
        final = final_metrics(summary)
        if final and step not in {
            m.step for m in self.client.get_metric_history(self.run_id, f"final_{next(iter(final))}")
        }:
            self.client.log_batch(self.run_id, metrics=[Metric(f"final_{k}", v, now, step) for k, v in final.items()])
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id)
        self.finished = True

    def close(self, error: BaseException | None) -> None:
        if error is not None and not self.finished:  # stopped: not left RUNNING (a resume takes it up again)
            interrupted = isinstance(error, KeyboardInterrupt) or type(error).__name__ == "Interrupted"
            self.client.set_terminated(self.run_id, status="KILLED" if interrupted else "FAILED")


class Loggers:
    """The run's loggers, each call guarded: a logger that fails warns once and is dropped."""

    def __init__(self, loggers: list) -> None:
        self.active = list(loggers)

    def __bool__(self) -> bool:
        return bool(self.active)

    def _each(self, method: str, *args) -> None:
        for logger in list(self.active):
            try:
                getattr(logger, method)(*args)
            except Exception as error:  # a store down or locked, a full disk: the run goes on
                log.warning(f"logger {logger.name} failed ({describe(error)}); it logs nothing more for this run")
                self.active.remove(logger)

    def log_epoch(self, row: dict, model: torch.nn.Module | None) -> None:
        self._each("log_epoch", row, model)

    def finish(self, config: dict, summary: dict, run_dir: Path) -> None:
        """The final metrics and the run's files: summary.csv as the run completes it (the folder's
        own is written after this, so a run stopped here finishes its loggers when resumed)."""
        with tempfile.TemporaryDirectory() as scratch:
            write_csv_atomic(Path(scratch) / SUMMARY, [summary])
            files = [Path(scratch) / SUMMARY] + [
                run_dir / n for n in (METRICS, TEMPERATURES, CONFIG) if (run_dir / n).is_file()
            ]
            self._each("finish", config, summary, files)

    def close(self, error: BaseException | None = None) -> None:
        self._each("close", error)


def check_loggers(names) -> None:
    """Every logger's package installed, or a one-line ConfigError naming the extra to install."""
    import importlib.util

    for name in names:
        if name in EXTRAS and importlib.util.find_spec(EXTRAS[name]) is None:
            raise ConfigError(
                f"logger={name} needs the {EXTRAS[name]} package, which is not installed: "
                f"pip install 'tdgs[{EXTRAS[name]}]'"
            )


def open_loggers(cfg: DictConfig, run_dir: Path, resumed_epoch: int, metrics: list[dict], model) -> Loggers:
    """The loggers ``cfg.logger`` names (csv aside: its files are the run's own), continuing a run
    resumed after ``resumed_epoch`` (0: a new run) whose finished epochs are ``metrics``; ``model``
    as the last of them ended (None: no histograms)."""
    names = list(cfg.get("logger") or {})
    config = OmegaConf.to_container(cfg, resolve=True)
    opened = []
    try:
        if "tensorboard" in names:
            opened.append(TensorBoard(run_dir, resumed_epoch))
        if "mlflow" in names:
            opened.append(MLflow(run_dir, cfg.logger.mlflow, config, Path(cfg.paths.output_dir)))
    except Exception as error:
        log.warning(f"a logger could not start ({describe(error)}); the run goes on without it")
    loggers = Loggers(opened)
    for logger in list(loggers.active):  # the resumed epoch again (TensorBoard), or the epochs a logger lacks
        rows = metrics[-1:] if isinstance(logger, TensorBoard) and not logger.fresh else metrics
        for row in rows:
            Loggers([logger]).log_epoch(row, model if row is metrics[-1] else None)  # the model is the last epoch's
    return loggers


def prepare_mlflow(cfg: DictConfig, sweep_dir: Path) -> None:
    """Before a sweep's jobs start (they would race on it): the MLflow store's tables and the
    sweep's experiment, when ``cfg.logger`` names mlflow."""
    if "mlflow" not in (cfg.get("logger") or {}) or importlib_missing("mlflow"):
        return
    from mlflow.tracking import MlflowClient

    options = cfg.logger.mlflow
    uri, artifacts = mlflow_store(options, Path(cfg.paths.output_dir))
    name = options.get("experiment_name") or experiment_name(sweep_dir / "job", Path(cfg.paths.output_dir))
    mlflow_experiment(MlflowClient(tracking_uri=uri), name, artifacts)


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
