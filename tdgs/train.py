"""The training run (SPEC.md section 3): seed, load the data whole onto the device, build the
deck's CNN with the chosen pooler, train with Adam and cross-entropy, evaluate every epoch, and
write the run folder's files (see :mod:`tdgs.results`). One flat function, :func:`train`."""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from .data import Splits, load_dataset
from .model import PoolingCNN
from .results import CONFIG, METRICS, SUMMARY, TEMPERATURES, write_csv_atomic, write_text_atomic
from .summaries import pooler_summary, temperature_table

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) over a whole split, in evaluation mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in batches(images, labels, batch_size):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train()
    return loss_sum / len(labels), 100.0 * correct / len(labels)


def pooler_columns(pooler_cfg: DictConfig) -> dict:
    """The pooler's name and options as plain values (``t0`` empty for poolers without it)."""
    options = OmegaConf.to_container(pooler_cfg, resolve=True)
    return {"pooler": options.pop("name"), "t0": options.pop("t0", None), **options}


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one model as ``cfg`` says, writing the run's files into ``run_dir``; return the summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    trainer = cfg.trainer
    if trainer.threads:
        torch.set_num_threads(trainer.threads)
    seed_everything(cfg.seed, trainer.deterministic)
    device = resolve_device(cfg.device)
    pooler = pooler_columns(cfg.pooler)
    summary = {
        "dataset": cfg.dataset.name,
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
        "device": str(device),
        "status": "failed",
        "error": "",
    }
    metrics: list[dict] = []
    try:
        start = time.perf_counter()
        data: Splits = load_dataset(**OmegaConf.to_container(cfg.dataset, resolve=True)).to(device)
        summary["data_seconds"] = time.perf_counter() - start
        options = {k: v for k, v in pooler.items() if k != "pooler" and v is not None}
        model = PoolingCNN(pooler["pooler"], data.image_shape, data.num_classes, **options).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=trainer.lr)
        probe = data.test_images[: trainer.probe_size].float().div(255)
        log.info(
            f"{cfg.dataset.name} ({len(data.train_labels)} train / {len(data.test_labels)} test, "
            f"{'x'.join(map(str, data.image_shape))}), pooler {pooler['pooler']}, seed {cfg.seed}, "
            f"{device}; results in {run_dir}"
        )
        show_progress = trainer.progress if trainer.progress is not None else sys.stderr.isatty()
        for epoch in range(1, trainer.epochs + 1):
            start = time.perf_counter()
            order = torch.randperm(len(data.train_labels), device=device)
            loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
            steps = tqdm(
                batches(data.train_images, data.train_labels, trainer.batch_size, order),
                total=-(-len(order) // trainer.batch_size),
                desc=f"epoch {epoch}/{trainer.epochs}",
                disable=not show_progress,
                leave=False,
            )
            for x, y in steps:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
            train_loss, train_acc = loss_sum.item() / seen, 100.0 * correct.item() / seen
            test_loss, test_acc = evaluate(model, data.test_images, data.test_labels, trainer.eval_batch_size)
            seconds = time.perf_counter() - start
            metrics.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "seconds": seconds,
                    **pooler_summary(model, probe),
                }
            )
            write_csv_atomic(run_dir / METRICS, metrics)
            best = max(metrics, key=lambda row: row["test_acc"])
            summary.update(
                epochs_done=epoch,
                test_acc=test_acc,
                best_test_acc=best["test_acc"],
                best_epoch=best["epoch"],
                train_loss=train_loss,
                train_seconds=summary["train_seconds"] + seconds,
            )
            log.info(
                f"epoch {epoch}/{trainer.epochs}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
                f"test loss {test_loss:.4f} acc {test_acc:.2f}% | {seconds:.1f}s"
            )
        if pooler["pooler"] == "tdgs":
            write_csv_atomic(run_dir / TEMPERATURES, temperature_table(model))
        summary["status"] = "completed"
        return summary
    except KeyboardInterrupt:
        summary.update(status="interrupted", error="KeyboardInterrupt")
        raise
    except Exception as error:
        summary["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        raise
    finally:
        write_csv_atomic(run_dir / SUMMARY, [summary])
