"""The training run (the deck's protocol, docs/design.md): seed, load the data whole onto the device, build the
deck's CNN with the chosen pooler, train with Adam and cross-entropy (the step, its precision and
compile mode: :mod:`tdgs.step`), evaluate every epoch, and write the run folder's files (see
:mod:`tdgs.results`). One flat function, :func:`train`."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT, load_checkpoint, rng_states, save_checkpoint, set_rng_states
from .data import Splits, load_dataset
from .networks import WINDOW, build_model
from .results import (
    CONFIG,
    METRICS,
    SUMMARY,
    TEMPERATURES,
    OutputError,
    run_status,
    write_csv_atomic,
    write_text_atomic,
)
from .step import TrainStep, autocast, make_adam, resolve_mode
from .summaries import pooler_summary, temperature_table
from .validate import ConfigError, resolve_device, validate

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed torch (CPU and CUDA), numpy and random; optionally force deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def batches(images: torch.Tensor, labels: torch.Tensor, size: int, order: torch.Tensor | None = None):
    """(float images in [0, 1], labels) by index slices of ``order`` (default: in order)."""
    count = len(labels)
    for start in range(0, count, size):
        index = order[start : start + size] if order is not None else slice(start, start + size)
        yield images[index].float().div_(255), labels[index]  # (b, C, H, W), (b,)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, precision: str = "32"
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) over a whole split, in evaluation mode, with the
    training's autocast ``precision``."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in batches(images, labels, batch_size):
        with autocast(precision, x.device):
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train()
    return loss_sum / len(labels), 100.0 * correct / len(labels)


def pooler_columns(pooler_cfg: DictConfig) -> dict:
    """The pooler's name and options as plain values (``t0`` empty for poolers without it)."""
    options = OmegaConf.to_container(pooler_cfg, resolve=True)
    return {"pooler": options.pop("name"), "t0": options.pop("t0", None), **options}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops, keeping its finished epochs."""


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived: the run stopped at a safe point (after a training step)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def identity(cfg: DictConfig) -> dict:
    """What must match for a checkpoint to be resumed: the data (not where it lives), the model, the pooler,
    the optimisation and the seed; ``trainer.epochs`` may grow, and the compile mode and device
    may change (they do not change what is computed)."""
    dataset = {
        k: v
        for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items()
        if k not in ("root", "source", "download")
    }
    trainer = {k: cfg.trainer[k] for k in ("batch_size", "lr", "deterministic")}
    if cfg.trainer.precision != "32":  # left out for 32, so that checkpoints from before precision existed still match
        trainer["precision"] = cfg.trainer.precision
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
    ``trainer.epochs`` epochs (a checkpoint of another configuration is refused), else None."""
    summary = pd.read_csv(run_dir / SUMMARY).iloc[0].to_dict() if run_status(run_dir) == "completed" else None
    if summary is None or summary.get("epochs_done") != cfg.trainer.epochs:
        return None
    state = load_checkpoint(run_dir, identity(cfg))
    return summary if state is not None and state["epoch"] == cfg.trainer.epochs else None


def wants_resume(cfg: DictConfig) -> bool:
    """``resume=true``, or a SLURM job requeued after preemption (it resumes by itself)."""
    return bool(cfg.resume) or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one model as ``cfg`` says, writing the run's files into ``run_dir``; return the summary.

    Checks the config first; checkpoints after every epoch; with ``resume=true`` continues from
    the last complete epoch of ``run_dir`` (and leaves a completed one as it is). Raises
    ConfigError, DatasetUnavailable, TrainingDiverged, OutputError or Interrupted (SIGTERM/SIGINT)
    after writing summary.csv (when it can)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = cfg.trainer
    pooler = pooler_columns(cfg.pooler)
    if cfg.model.name != "deck_cnn":  # its pools keep their own windows: none of these
        pooler.update(dict.fromkeys(WINDOW))
    summary = {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        **pooler,
        "seed": cfg.seed,
        "epochs": trainer.epochs,
        "epochs_done": 0,
        "test_acc": float("nan"),
        "best_test_acc": float("nan"),
        "best_epoch": 0,
        "train_loss": float("nan"),
        "train_seconds": 0.0,
        "data_seconds": 0.0,
        "device": str(cfg.device),
        "precision": trainer.precision,
        "compile": trainer.compile,  # the mode run once resolved (auto -> graph or none)
        "status": "failed",
        "error": "",
    }
    metrics: list[dict] = []
    # a folder holding a run's results (or a killed run's checkpoint) is only resumed, never replaced
    owned = not (run_dir / SUMMARY).exists() and not (run_dir / CHECKPOINT).exists()
    try:
        validate(cfg)
        if not owned and not wants_resume(cfg):
            raise ConfigError(
                f"{run_dir} already holds a run; resume=true continues it, or choose another hydra.run.dir"
            )
        if not owned and (done := completed_run(run_dir, cfg)) is not None:  # resuming a sweep: left as it is
            log.info(f"{run_dir} already completed these {trainer.epochs} epochs; nothing to do")
            return done
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
        data: Splits = load_dataset(**OmegaConf.to_container(cfg.dataset, resolve=True)).to(device)
        summary["data_seconds"] = time.perf_counter() - start
        options = {k: v for k, v in pooler.items() if k != "pooler" and v is not None}
        model = build_model(cfg.model.name, pooler["pooler"], data.image_shape, data.num_classes, **options).to(device)
        optimizer = make_adam(model.parameters(), trainer.lr, device=device, mode=mode)
        step = TrainStep(
            model,
            optimizer,
            data.train_images,
            data.train_labels,
            batch_size=trainer.batch_size,
            precision=trainer.precision,
            mode=mode,
            device=device,
        )
        probe = data.test_images[: trainer.probe_size].float().div(255)
        first_epoch = 1
        if wants_resume(cfg):
            state = load_checkpoint(run_dir, identity(cfg))
            if state is None:
                log.info(f"resume: no usable checkpoint in {run_dir}; starting from scratch")
            elif state["epoch"] > trainer.epochs:
                raise ConfigError(
                    f"trainer.epochs={trainer.epochs} but {run_dir} already finished {state['epoch']} epochs; "
                    f"resuming needs trainer.epochs >= {state['epoch']}"
                )
            else:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                if step.scaler is not None and state.get("scaler"):  # checkpoints without one: a fresh scaler
                    step.scaler.load_state_dict(state["scaler"])
                set_rng_states(state["rng"])
                metrics = list(state["metrics"])
                summary.update(state["summary"])
                first_epoch = state["epoch"] + 1
                write_csv_atomic(run_dir / METRICS, metrics)  # exactly the finished epochs
                log.info(f"resume: continuing {run_dir} after epoch {state['epoch']}")
        owned = True  # from here on this invocation's outcome is the run's
        write_text_atomic(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        log.info(
            f"{cfg.dataset.name} ({len(data.train_labels)} train / {len(data.test_labels)} test, "
            f"{'x'.join(map(str, data.image_shape))}), {cfg.model.name} with pooler {pooler['pooler']}, "
            f"seed {cfg.seed}, "
            f"{device}; results in {run_dir}"
        )
        show_progress = trainer.progress if trainer.progress is not None else sys.stderr.isatty()
        with stop_requests() as stop:
            for epoch in range(first_epoch, trainer.epochs + 1):
                start = time.perf_counter()
                order = torch.randperm(len(data.train_labels), device=device)
                indices = order.split(trainer.batch_size)  # (batch_size,) each, the last maybe shorter
                for index in tqdm(
                    indices, desc=f"epoch {epoch}/{trainer.epochs}", disable=not show_progress, leave=False
                ):
                    step(index)
                    if stop:
                        raise Interrupted(stop[0])
                totals = step.take_totals()  # the one device sync of the epoch's training
                train_loss = totals.loss_sum / totals.images if totals.images else math.nan
                train_acc = 100.0 * totals.correct / totals.images if totals.images else math.nan
                if not math.isfinite(train_loss):  # over counted steps: a skipped (16-mixed) step is no divergence
                    skipped = (
                        f" ({totals.skipped_steps} of {len(indices)} steps skipped)" if totals.skipped_steps else ""
                    )
                    raise TrainingDiverged(
                        f"the training loss became {train_loss} in epoch {epoch}{skipped}; stopped, keeping the "
                        f"{epoch - 1} finished epoch(s) (try a smaller trainer.lr)"
                    )
                test_loss, test_acc = evaluate(
                    model, data.test_images, data.test_labels, trainer.eval_batch_size, trainer.precision
                )
                seconds = time.perf_counter() - start
                metrics.append(
                    {
                        "epoch": epoch,
                        "train_loss": train_loss,
                        "train_acc": train_acc,
                        "test_loss": test_loss,
                        "test_acc": test_acc,
                        "seconds": seconds,
                        "skipped_steps": totals.skipped_steps,
                        **pooler_summary(model, probe),
                    }
                )
                best = max(metrics, key=lambda row: row["test_acc"])
                summary.update(
                    epochs_done=epoch,
                    test_acc=test_acc,
                    best_test_acc=best["test_acc"],
                    best_epoch=best["epoch"],
                    train_loss=train_loss,
                    train_seconds=summary["train_seconds"] + seconds,
                    compile=step.mode,  # none if graph capture failed
                )
                write_csv_atomic(run_dir / METRICS, metrics)
                save_checkpoint(
                    run_dir,
                    {
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        **({"scaler": step.scaler.state_dict()} if step.scaler is not None else {}),
                        "rng": rng_states(),
                        "metrics": metrics,
                        "summary": {
                            k: summary[k]
                            for k in (
                                "epochs_done",
                                "test_acc",
                                "best_test_acc",
                                "best_epoch",
                                "train_loss",
                                "train_seconds",
                            )
                        },
                        "identity": identity(cfg),
                    },
                )
                log.info(
                    f"epoch {epoch}/{trainer.epochs}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
                    f"test loss {test_loss:.4f} acc {test_acc:.2f}% | {seconds:.1f}s"
                )
        if pooler["pooler"] == "tdgs":
            write_csv_atomic(run_dir / TEMPERATURES, temperature_table(model))
        summary["status"] = "completed"
        return summary
    except (KeyboardInterrupt, Interrupted) as error:
        summary.update(status="interrupted", error=str(error) or type(error).__name__)
        raise
    except Exception as error:
        summary["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        raise
    finally:
        if owned:
            try:
                write_csv_atomic(run_dir / SUMMARY, [summary])
            except OutputError:
                if summary["status"] == "completed":  # otherwise the error that stopped the run is the one to report
                    raise
