"""The training run (by default the deck's protocol, docs/design.md): seed, load the data whole onto
the device with a validation split held out, build the network with the chosen pooler, train with
the recipe's optimizer, schedule and augmentation (the step, its precision and compile mode:
:mod:`tdgs.step`), evaluate validation and test every epoch, keep the best-validation weights, stop
early if asked, and write the run folder's files (:mod:`tdgs.results`). :func:`train` reads top to
bottom: the run record, the set-up (and resume), the epochs."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .checkpoint import (
    BEST,
    CHECKPOINT,
    another_configuration,
    best_epoch,
    load_checkpoint,
    rng_states,
    save_best,
    save_checkpoint,
    set_rng_states,
)
from .config import TrainerConfig
from .data import Splits, load_dataset
from .data.inputs import Inputs, channel_stats
from .errors import ConfigError, Interrupted, OutputError, TrainingDiverged, describe
from .loggers import Loggers, open_loggers
from .networks import build_model
from .optim import LearningRates, load_optimizer_state, make_optimizer, parameter_groups
from .pooling.base import WINDOW
from .results import (
    CONFIG,
    METRICS,
    SUMMARY,
    TEMPERATURES,
    replace_atomic,
    run_status,
    write_csv_atomic,
    write_text_atomic,
)
from .step import TrainStep, autocast, resolve_mode
from .summaries import pooler_summary, temperature_table
from .validate import resolve_device, validate

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed torch (CPU and CUDA), numpy and random; optionally force deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    precision: str = "32",
    inputs: Inputs | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) over a whole split, in evaluation mode, with the
    training's autocast ``precision`` and ``inputs`` (default: scaled to [0, 1]); NaN for an empty split."""
    if not len(labels):
        return math.nan, math.nan
    inputs = inputs or Inputs()
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x, y = inputs(images[start : start + batch_size], training=False), labels[start : start + batch_size]
        with autocast(precision, x.device):
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train()
    return loss_sum / len(labels), 100.0 * correct / len(labels)


def pooler_columns(cfg: DictConfig) -> dict:
    """The pooler's name and options as plain values (``t0`` empty for poolers without it; the
    window empty for a torchvision network, whose pools keep their own windows)."""
    options = OmegaConf.to_container(cfg.pooler, resolve=True)
    columns = {"pooler": options.pop("name"), "t0": options.pop("t0", None), **options}
    return columns if cfg.model.name == "deck_cnn" else {**columns, **dict.fromkeys(WINDOW)}


@contextlib.contextmanager
def stop_requests():
    """Turn SIGTERM (how SLURM preempts) and SIGINT into a flag the training loop polls."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield received
        return
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# trainer options a checkpoint's identity names only where they differ from the deck's recipe (the
# defaults), so that checkpoints and config.yaml files written before an option existed still match
TRAINER_DEFAULTS = {f.name: f.default for f in fields(TrainerConfig)}
IDENTITY_IF_SET = ("precision", "theta_lr_scale", "optimizer", "weight_decay", "schedule", "warmup_epochs",
                   "label_smoothing", "augment")  # fmt: skip


def identity(cfg: DictConfig) -> dict:
    """What must match for a checkpoint to be resumed: the data (not where it lives) and its
    validation split and normalisation, the model, the pooler, the recipe and the seed;
    ``trainer.epochs`` may grow (but for a cosine schedule, whose length it is), and the compile
    mode, the device and the early stopping may change (they do not change what an epoch computes)."""
    dataset = {
        k: v
        for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items()
        if k not in ("root", "source", "download")
    }
    if not dataset.get("val_size"):  # none held out, as before validation existed
        dataset = {k: v for k, v in dataset.items() if k not in ("val_size", "split_seed")}
    if not dataset.get("normalize"):
        dataset.pop("normalize", None)
    trainer = {k: cfg.trainer[k] for k in ("batch_size", "lr", "deterministic")}
    for key in IDENTITY_IF_SET:
        if cfg.trainer.get(key, TRAINER_DEFAULTS[key]) != TRAINER_DEFAULTS[key]:  # absent from older config.yaml
            trainer[key] = cfg.trainer[key]
    if cfg.trainer.get("schedule", "constant") != "constant":
        trainer["epochs"] = cfg.trainer.epochs
    pooler = OmegaConf.to_container(cfg.pooler, resolve=True)
    return {
        "dataset": str(dataset),
        "model": cfg.model.name,
        "pooler": str(pooler),
        "trainer": str(trainer),
        "seed": cfg.seed,
    }


def completed_run(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The summary of ``run_dir`` if it holds this configuration's run, completed with
    ``trainer.epochs`` epochs (or stopped early), else None: the checkpoint says which configuration
    it is (another one is refused), or, without checkpoints, the run's config.yaml."""
    summary = pd.read_csv(run_dir / SUMMARY).iloc[0].to_dict() if run_status(run_dir) == "completed" else None
    stopped = summary is not None and summary.get("stopped_early") in (True, "True")
    if summary is None or (summary.get("epochs_done") != cfg.trainer.epochs and not stopped):
        return None
    state = load_checkpoint(run_dir, identity(cfg))
    if state is not None:
        return summary if state["epoch"] == summary["epochs_done"] else None
    saved = run_dir / CONFIG  # checkpoints deleted (or not copied) to save space: the run's own config says
    return summary if saved.is_file() and identity(OmegaConf.load(saved)) == identity(cfg) else None


def check_same_configuration(run_dir: Path, cfg: DictConfig) -> None:
    """A completed run is continued only with its own configuration (its config.yaml says which),
    never replaced by another one: a one-line ConfigError naming what differs."""
    saved = run_dir / CONFIG
    if saved.is_file() and (theirs := identity(OmegaConf.load(saved))) != identity(cfg):
        raise another_configuration(saved, theirs, identity(cfg))


def same_run_below(root: Path, cfg: DictConfig, run_dir: Path) -> Path | None:
    """A folder below ``root``, other than ``run_dir``, holding a completed run of this
    configuration and seed (its config.yaml first, then :func:`completed_run`)."""
    for config in sorted(root.rglob(CONFIG)):
        folder = config.parent
        if ".hydra" in folder.parts or folder.resolve() == run_dir.resolve():
            continue
        try:
            if identity(OmegaConf.load(config)) != identity(cfg):
                continue
        except Exception:  # unreadable, or written by something else
            continue
        if completed_run(folder, cfg) is not None:
            return folder
    return None


def copy_run(source: Path, run_dir: Path, cfg: DictConfig) -> dict:
    """Make ``run_dir`` a copy of ``source``'s completed run (its results and best weights, not its
    checkpoints), with this run's config.yaml, ``copied_from`` in summary.csv and its loggers fed
    from the copied metrics; its summary."""
    for name in (METRICS, TEMPERATURES, BEST):
        if (source / name).is_file():
            replace_atomic(run_dir / name, lambda partial, name=name: shutil.copyfile(source / name, partial))
    write_text_atomic(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    summary = pd.read_csv(source / SUMMARY).iloc[0].to_dict()
    summary |= {"comparison": cfg.get("comparison"), "copied_from": str(source.resolve())}  # this run's own
    loggers = open_loggers(cfg, run_dir, 0, pd.read_csv(run_dir / METRICS).to_dict("records"), None)
    loggers.finish(OmegaConf.to_container(cfg, resolve=True), summary, run_dir)
    loggers.close()
    write_csv_atomic(run_dir / SUMMARY, [summary])  # last: the folder counts as a run once it is whole
    return summary


def wants_resume(cfg: DictConfig) -> bool:
    """``resume=true``, or a SLURM job requeued after preemption (it resumes by itself)."""
    return bool(cfg.resume) or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


# the recipe, as summary.csv columns
TRAINER_COLUMNS = ("optimizer", "lr", "batch_size", "weight_decay", "schedule", "warmup_epochs", "label_smoothing",
                   "augment", "early_stopping_patience", "theta_lr_scale")  # fmt: skip
SUMMARY_KEPT = ("epochs_done", "test_acc", "best_test_acc", "best_epoch", "train_loss", "train_seconds")  # checkpointed


def new_summary(cfg: DictConfig) -> dict:
    """summary.csv's row before the run: what it is, and a failed status until it completes."""
    return {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        **pooler_columns(cfg),
        "seed": cfg.seed,
        "epochs": cfg.trainer.epochs,
        **{k: cfg.trainer[k] for k in TRAINER_COLUMNS},
        "comparison": cfg.get("comparison"),  # runs the report compares whatever their options (scripts/tune.sh)
        "normalize_inputs": cfg.dataset.normalize,  # dataset.normalize ("normalize" is TDGS's option)
        "split_seed": cfg.dataset.split_seed,
        "train_size": 0,  # images trained on
        "val_size": 0,  # images held out for validation
        "epochs_done": 0,
        "test_acc": math.nan,
        "best_test_acc": math.nan,  # chosen on the test set: for reference, never for selection
        "best_epoch": 0,
        "val_acc": math.nan,
        "best_val_acc": math.nan,
        "best_val_epoch": math.nan,
        "test_acc_at_best_val": math.nan,  # the run's selected result
        "stopped_early": False,
        "train_loss": math.nan,
        "train_seconds": 0.0,
        "data_seconds": 0.0,
        "device": str(cfg.device),
        "precision": cfg.trainer.precision,
        "compile": cfg.trainer.compile,  # the mode run once resolved (auto -> graph or none)
        "status": "failed",
        "error": "",
    }


class RunRecord:
    """The run's summary.csv, written however the run ends (completed, failed: the error's first
    line, interrupted), in the spirit of lightning-hydra-template's ``task_wrapper``; but only by an
    invocation that owns the folder: one that already holds a run's results (or a killed run's
    checkpoint) is only resumed, never replaced, so ``owned`` turns true once the set-up is done."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.run_dir, self.summary = run_dir, new_summary(cfg)
        self.owned = not (run_dir / SUMMARY).exists() and not (run_dir / CHECKPOINT).exists()

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(error, (KeyboardInterrupt, Interrupted)):
            self.summary.update(status="interrupted", error=str(error) or kind.__name__)
        elif isinstance(error, Exception):
            self.summary["error"] = describe(error, limit=10_000)
        if self.owned:
            try:
                write_csv_atomic(self.run_dir / SUMMARY, [self.summary])
            except OutputError:
                if self.summary["status"] == "completed":  # else: the error that stopped the run is the one to report
                    raise


@dataclass
class Run:
    """What a run trains: data on the device, network, optimizer, step, and where it starts."""

    data: Splits
    inputs: Inputs  # uint8 batches -> network inputs (normalisation, augmentation)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: TrainStep
    probe: torch.Tensor  # test images for input-dependent pooler summaries (gated)
    metrics: list[dict]  # one row per finished epoch
    initial_temperatures: pd.DataFrame  # TDGS: every temperature before training (temperatures.csv's initial)
    steps_per_epoch: int  # optimizer steps of an epoch (the schedule counts them)
    first_epoch: int = 1
    loggers: Loggers = field(default_factory=lambda: Loggers([]))  # TensorBoard, MLflow, once set up


def set_up(cfg: DictConfig, summary: dict) -> Run:
    """Seed, pick the device and compile mode, load the data, build the network and its step."""
    trainer = cfg.trainer
    if trainer.threads:
        torch.set_num_threads(trainer.threads)
    seed_everything(cfg.seed, trainer.deterministic)
    device = resolve_device(cfg.device)
    mode = resolve_mode(trainer.compile, device)
    summary.update(device=str(device), compile=mode)
    if device.type == "cuda":
        if device.index is not None:  # graph capture and its streams use the current device
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not trainer.deterministic
    start = time.perf_counter()
    options = OmegaConf.to_container(cfg.dataset, resolve=True)
    normalize = options.pop("normalize")
    data: Splits = load_dataset(**options).to(device)
    summary["data_seconds"] = time.perf_counter() - start
    summary.update(train_size=len(data.train_labels), val_size=len(data.val_labels))
    mean, std = channel_stats(data.train_images) if normalize else (None, None)
    inputs = Inputs(mean=mean, std=std, augment=trainer.augment, side=data.image_shape[1])
    options = {k: v for k, v in pooler_columns(cfg).items() if k != "pooler" and v is not None}
    model = build_model(cfg.model.name, cfg.pooler.name, data.image_shape, data.num_classes, **options).to(device)
    groups = parameter_groups(model, trainer.lr, trainer.theta_lr_scale, trainer.weight_decay)
    optimizer = make_optimizer(groups, trainer.optimizer, lr=trainer.lr, device=device, mode=mode)
    steps = math.ceil(len(data.train_labels) / trainer.batch_size)  # per epoch
    rates = LearningRates(optimizer, trainer.schedule, trainer.warmup_epochs * steps, trainer.epochs * steps)
    step = TrainStep(
        model, optimizer, data.train_images, data.train_labels,
        batch_size=trainer.batch_size, precision=trainer.precision, mode=mode, device=device,
        inputs=inputs, label_smoothing=trainer.label_smoothing, learning_rates=rates,
    )  # fmt: skip
    probe = inputs(data.test_images[: trainer.probe_size], training=False)
    return Run(data, inputs, model, optimizer, step, probe, [], temperature_table(model), steps)


def resume(run: Run, cfg: DictConfig, run_dir: Path, summary: dict) -> None:
    """Continue from the last complete epoch of ``run_dir``'s checkpoint, if it has a usable one."""
    state = load_checkpoint(run_dir, identity(cfg))
    if state is None and run_status(run_dir) == "completed":  # never trained over
        raise ConfigError(
            f"{run_dir} holds a completed run but no usable checkpoint to continue it from; "
            "choose another folder to train this configuration"
        )
    if state is None:
        log.info(f"resume: no usable checkpoint in {run_dir}; starting from scratch")
        return
    if state["epoch"] > cfg.trainer.epochs:
        raise ConfigError(
            f"trainer.epochs={cfg.trainer.epochs} but {run_dir} already finished {state['epoch']} epochs; "
            f"resuming needs trainer.epochs >= {state['epoch']}"
        )
    run.model.load_state_dict(state["model"])
    load_optimizer_state(run.optimizer, state["optimizer"])  # this device's implementation, the checkpoint's state
    if run.step.scaler is not None and state.get("scaler"):  # checkpoints without one: a fresh scaler
        run.step.scaler.load_state_dict(state["scaler"])
    set_rng_states(state["rng"])
    run.metrics, run.first_epoch = list(state["metrics"]), state["epoch"] + 1
    run.step.steps_done = state["epoch"] * run.steps_per_epoch
    summary.update(state["summary"])
    summary.update(best_validation(run.metrics))
    write_csv_atomic(run_dir / METRICS, run.metrics)  # exactly the finished epochs
    keep_best_consistent(run, state["epoch"], run_dir, summary)
    log.info(f"resume: continuing {run_dir} after epoch {state['epoch']}")


def keep_best_consistent(run: Run, epoch: int, run_dir: Path, summary: dict) -> None:
    """After a resume from ``epoch``: checkpoint_best.pt must hold the best validation epoch so far.
    A run stopped between writing an epoch's checkpoint and its new best weights left the older
    best there: the resumed weights are the best ones then, so they are written. Weights of an epoch
    after the resumed one (a damaged last checkpoint made the resume fall back) are removed."""
    saved = best_epoch(run_dir)
    if saved is not None and saved > epoch:
        (run_dir / BEST).unlink()
        log.warning(f"{run_dir / BEST} held epoch {saved}, which the resume from epoch {epoch} drops; removed")
        saved = None
    best = summary["best_val_epoch"]
    if math.isnan(best) or saved == best:
        return
    if best == epoch:
        save_best(run_dir, best_state(run, run.metrics[-1]))
    else:
        log.warning(f"{run_dir / BEST} lacks the best validation epoch {best}; the next better epoch writes it")


def best_state(run: Run, row: dict) -> dict:
    """checkpoint_best.pt's contents: the epoch, its weights and accuracies, the inputs it expects."""
    normalization = {} if run.inputs.mean is None else {"mean": run.inputs.mean.cpu(), "std": run.inputs.std.cpu()}
    return {
        "epoch": row["epoch"],
        "model": run.model.state_dict(),
        "val_acc": row["val_acc"],
        "test_acc": row["test_acc"],
        "inputs": normalization,  # per-channel mean and std of [0, 1] inputs, when dataset.normalize
    }


def best_validation(metrics: list[dict]) -> dict:
    """The summary's validation columns: the last epoch's ``val_acc``, and the epoch with the best
    validation accuracy (the earliest on ties) with its test accuracy; NaN without validation."""
    scored = [r for r in metrics if not math.isnan(r.get("val_acc", math.nan))]
    if not scored:
        return {
            "val_acc": math.nan,
            "best_val_acc": math.nan,
            "best_val_epoch": math.nan,
            "test_acc_at_best_val": math.nan,
        }
    best = max(scored, key=lambda r: r["val_acc"])  # max keeps the first of equals
    return {
        "val_acc": metrics[-1].get("val_acc", math.nan),
        "best_val_acc": best["val_acc"],
        "best_val_epoch": best["epoch"],
        "test_acc_at_best_val": best["test_acc"],
    }


def patience_exhausted(metrics: list[dict], patience: int | None) -> bool:
    """Whether ``patience`` epochs have passed since the best validation accuracy (early stopping)."""
    best = best_validation(metrics)["best_val_epoch"] if metrics else math.nan
    return patience is not None and not math.isnan(best) and metrics[-1]["epoch"] - best >= patience


def run_epoch(run: Run, epoch: int, trainer: DictConfig, stop: list[int], progress: bool) -> dict:
    """Train one epoch over a fresh permutation, then evaluate validation and test: the epoch's
    metrics.csv row (``lr``: the network's learning rate at the epoch's last step).
    Raises Interrupted at the first step after a stop request, TrainingDiverged for a loss that is
    not finite over the epoch's counted steps (a skipped 16-mixed step is no divergence)."""
    start = time.perf_counter()
    order = torch.randperm(len(run.data.train_labels), device=run.data.train_labels.device)
    indices = order.split(trainer.batch_size)  # (batch_size,) each, the last maybe shorter
    for index in tqdm(indices, desc=f"epoch {epoch}/{trainer.epochs}", disable=not progress, leave=False):
        run.step(index)
        if stop:
            raise Interrupted(stop[0])
    totals = run.step.take_totals()  # the one device sync of the epoch's training
    train_loss = totals.loss_sum / totals.images if totals.images else math.nan
    if not math.isfinite(train_loss):
        skipped = f" ({totals.skipped_steps} of {len(indices)} steps skipped)" if totals.skipped_steps else ""
        raise TrainingDiverged(
            f"the training loss became {train_loss} in epoch {epoch}{skipped}; stopped, keeping the "
            f"{epoch - 1} finished epoch(s) (try a smaller trainer.lr)"
        )
    data, evaluation = run.data, (trainer.eval_batch_size, trainer.precision, run.inputs)
    val_loss, val_acc = evaluate(run.model, data.val_images, data.val_labels, *evaluation)
    test_loss, test_acc = evaluate(run.model, data.test_images, data.test_labels, *evaluation)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": 100.0 * totals.correct / totals.images if totals.images else math.nan,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "lr": float(run.optimizer.param_groups[0]["lr"]),  # the network's (a tensor in graph mode)
        "seconds": time.perf_counter() - start,
        "skipped_steps": totals.skipped_steps,
        **pooler_summary(run.model, run.probe),
    }


def record_epoch(run: Run, row: dict, cfg: DictConfig, run_dir: Path, summary: dict) -> None:
    """Add the epoch to metrics.csv and the summary, checkpoint (and the best-validation weights,
    after the checkpoint: see :func:`keep_best_consistent`), and log it."""
    run.metrics.append(row)
    best = max(run.metrics, key=lambda r: r["test_acc"])
    summary.update(
        epochs_done=row["epoch"],
        test_acc=row["test_acc"],
        best_test_acc=best["test_acc"],
        best_epoch=best["epoch"],
        train_loss=row["train_loss"],
        train_seconds=summary["train_seconds"] + row["seconds"],
        compile=run.step.mode,  # none if graph capture failed
        **best_validation(run.metrics),
    )
    write_csv_atomic(run_dir / METRICS, run.metrics)
    state = {
        "epoch": row["epoch"],
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        **({"scaler": run.step.scaler.state_dict()} if run.step.scaler is not None else {}),
        "rng": rng_states(),
        "metrics": run.metrics,
        "summary": {k: summary[k] for k in SUMMARY_KEPT},
        "identity": identity(cfg),
    }
    save_checkpoint(run_dir, state)
    if summary["best_val_epoch"] == row["epoch"]:
        save_best(run_dir, best_state(run, row))
    run.loggers.log_epoch(row, run.model)  # after the checkpoint: a resume logs from there (tdgs.loggers)
    validation = "" if math.isnan(row["val_acc"]) else f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2f}% | "
    log.info(
        f"epoch {row['epoch']}/{cfg.trainer.epochs}: "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}% | {validation}"
        f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.2f}% | {row['seconds']:.1f}s"
    )


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one model as ``cfg`` says, writing the run's files into ``run_dir``; return the summary.

    Checks the config first; checkpoints after every epoch; with ``resume=true`` continues from
    the last complete epoch of ``run_dir`` (and leaves a completed one as it is). Raises
    ConfigError, DatasetUnavailable, TrainingDiverged, OutputError or Interrupted (SIGTERM/SIGINT)
    after writing summary.csv (when it can)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunRecord(cfg, run_dir) as record:
        summary = record.summary
        validate(cfg)
        if not record.owned and not wants_resume(cfg):
            raise ConfigError(
                f"{run_dir} already holds a run; resume=true continues it, or choose another hydra.run.dir"
            )
        if not record.owned and (done := completed_run(run_dir, cfg)) is not None:  # resuming a sweep: left as it is
            log.info(f"{run_dir} already completed these {cfg.trainer.epochs} epochs; nothing to do")
            return done
        if not record.owned and run_status(run_dir) == "completed":
            check_same_configuration(run_dir, cfg)
        if record.owned and cfg.get("reuse") and (source := same_run_below(Path(cfg.reuse), cfg, run_dir)):
            record.owned = False  # the copy writes its own summary.csv
            log.info(f"{source} already ran this configuration and seed; copied, not trained again")
            return copy_run(source, run_dir, cfg)
        run = set_up(cfg, summary)
        if wants_resume(cfg):
            resume(run, cfg, run_dir, summary)
        record.owned = True  # from here on this invocation's outcome is the run's
        write_text_atomic(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        data = run.data
        log.info(
            f"{cfg.dataset.name} ({len(data.train_labels)} train / {len(data.val_labels)} validation / "
            f"{len(data.test_labels)} test, "
            f"{'x'.join(map(str, data.image_shape))}), {cfg.model.name} with pooler {cfg.pooler.name}, "
            f"seed {cfg.seed}, {summary['device']}; results in {run_dir}"
        )
        progress = cfg.trainer.progress if cfg.trainer.progress is not None else sys.stderr.isatty()
        with stop_requests() as stop, contextlib.ExitStack() as closing:
            run.loggers = open_loggers(cfg, run_dir, run.first_epoch - 1, run.metrics, run.model)
            closing.push(lambda kind, error, trace: run.loggers.close(error))  # an error's kind: KILLED or FAILED
            for epoch in range(run.first_epoch, cfg.trainer.epochs + 1):
                if patience_exhausted(run.metrics, cfg.trainer.early_stopping_patience):
                    summary["stopped_early"] = True
                    log.info(f"early stop: no better validation accuracy since epoch {summary['best_val_epoch']}")
                    break
                record_epoch(run, run_epoch(run, epoch, cfg.trainer, stop, progress), cfg, run_dir, summary)
            if cfg.pooler.name == "tdgs":  # the model is built as at the start (same seed) before a resume loads it
                initial = run.initial_temperatures.temperature.to_numpy()
                write_csv_atomic(run_dir / TEMPERATURES, temperature_table(run.model).assign(initial=initial))
            summary["status"] = "completed"
            run.loggers.finish(OmegaConf.to_container(cfg, resolve=True), summary, run_dir)
        return summary
