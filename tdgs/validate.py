"""Checks of a composed tdgs-train config before any work: each problem is a :class:`ConfigError`
whose message is one line naming the key, the bad value and what is allowed."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .pooling import create_pooler


class ConfigError(ValueError):
    """A user's mistake in the configuration (reported in one line, without a traceback)."""


def _positive_int(key: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1{' or null' if allow_none else ''}, but got {value!r}")


def check_pooler(pooler: DictConfig) -> None:
    """Every pooler option, through the pooler's own checks (t0 > 0, eps > 0, allowed choices, ...)."""
    options = OmegaConf.to_container(pooler, resolve=True)
    name = options.pop("name")
    try:
        create_pooler(name, 1, **options)
    except ValueError as error:
        message = str(error)
        option = next((o for o in options if message.startswith(f"{o} ")), None)
        raise ConfigError(f"pooler.{message}" if option else f"pooler={name}: {message}") from None


def check_trainer(trainer: DictConfig) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "probe_size"):
        _positive_int(f"trainer.{key}", trainer[key])
    _positive_int("trainer.threads", trainer.threads, allow_none=True)
    lr = trainer.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or lr == float("inf"):
        raise ConfigError(f"trainer.lr must be a finite number > 0, but got {lr!r}")


def check_device(device: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, but got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but CUDA is not available here; use device=auto or device=cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device} but this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_dataset(dataset: DictConfig) -> None:
    source = dataset.source
    if source is not None:
        path = Path(source)
        if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"dataset.source must be a readable folder of IDX files, but {source!r} is not")
    root = Path(dataset.root)
    if root.exists() and (not root.is_dir() or not os.access(root, os.R_OK | os.X_OK)):
        raise ConfigError(f"dataset.root must be a readable folder, but {str(root)!r} is not")
    if dataset.name == "synthetic":
        if dataset.geometry not in ("mnist", "cifar"):
            raise ConfigError(f"dataset.geometry must be one of 'mnist', 'cifar', but got {dataset.geometry!r}")
        _positive_int("dataset.train_size", dataset.train_size)
        _positive_int("dataset.test_size", dataset.test_size)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first problem found in ``cfg``."""
    check_pooler(cfg.pooler)
    check_trainer(cfg.trainer)
    check_device(cfg.device)
    check_dataset(cfg.dataset)
