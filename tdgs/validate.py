"""Checks of a composed tdgs-train config before any work: each problem is a :class:`ConfigError`
whose message is one line naming the key, the bad value and what is allowed."""

from __future__ import annotations

import math
import os
import re
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .data.augment import AUGMENTS
from .data.splits import check_val_size
from .errors import ConfigError
from .loggers import check_loggers
from .networks import pooler_options_for
from .optim import OPTIMIZERS, SCHEDULES
from .pooling import create_pooler
from .pooling.checks import check_choice, check_positive_float, check_positive_int
from .step import COMPILE_CHOICES, PRECISIONS


def _check(check, key: str, value) -> None:
    """Run one of the poolers' argument checks on a config value, as a ConfigError naming ``key``."""
    try:
        check(key, value)
    except ValueError as error:
        raise ConfigError(str(error)) from None


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


def check_model(model: DictConfig, pooler: DictConfig) -> None:
    """A known network; the pooler's window options only where the network takes them."""
    try:
        pooler_options_for(model.name, OmegaConf.to_container(pooler, resolve=True))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_trainer(trainer: DictConfig) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "probe_size"):
        _check(check_positive_int, f"trainer.{key}", trainer[key])
    for key in ("threads", "early_stopping_patience"):
        if trainer[key] is not None:
            _check(check_positive_int, f"trainer.{key}", trainer[key])
    for key in ("lr", "theta_lr_scale"):
        _check(check_positive_float, f"trainer.{key}", trainer[key])
    for key, allowed in (
        ("precision", tuple(PRECISIONS)),
        ("compile", COMPILE_CHOICES),
        ("optimizer", OPTIMIZERS),
        ("schedule", SCHEDULES),
        ("augment", AUGMENTS),
    ):
        _check(partial(check_choice, allowed=allowed), f"trainer.{key}", trainer[key])
    if not (math.isfinite(trainer.weight_decay) and trainer.weight_decay >= 0):
        raise ConfigError(f"trainer.weight_decay must be a finite number >= 0, but got {trainer.weight_decay}")
    if not 0 <= trainer.label_smoothing < 1:
        raise ConfigError(f"trainer.label_smoothing must be in [0, 1), but got {trainer.label_smoothing}")
    if not 0 <= trainer.warmup_epochs < trainer.epochs:
        raise ConfigError(
            f"trainer.warmup_epochs must be from 0 to trainer.epochs - 1 = {trainer.epochs - 1}, "
            f"but got {trainer.warmup_epochs}"
        )


def check_device(device: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, but got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but CUDA is not available here; use device=auto or device=cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device} but this machine has {torch.cuda.device_count()} CUDA device(s)")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether CUDA ``device`` computes in bfloat16 natively (compute capability 8.0 or newer; older
    GPUs only emulate it, more slowly than float32). ``cuda`` without an index is the current one."""
    if device.index is None:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def check_step(trainer: DictConfig, device: torch.device) -> None:
    """trainer.precision and trainer.compile on the device the run will use."""
    if trainer.compile == "graph" and device.type != "cuda":
        raise ConfigError(
            f"trainer.compile=graph (CUDA graphs) needs a CUDA device, but this run uses {device}; "
            "use trainer.compile=none or inductor (auto picks none on the CPU)"
        )
    if trainer.precision == "bf16-mixed" and device.type == "cuda" and not native_bf16(device):
        raise ConfigError(
            f"trainer.precision=bf16-mixed but {torch.cuda.get_device_name(device)} has no native bfloat16; "
            "use trainer.precision=16-mixed or 32"
        )


def check_dataset(dataset: DictConfig) -> None:
    check_val_size(dataset.val_size)  # a count larger than the training set: when the data is split
    source = dataset.get("source")
    if source is not None:
        path = Path(source)
        if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"dataset.source must be a readable folder of IDX files, but {source!r} is not")
    root = Path(dataset.get("root") or ".")
    if root.exists() and (not root.is_dir() or not os.access(root, os.R_OK | os.X_OK)):
        raise ConfigError(f"dataset.root must be a readable folder, but {str(root)!r} is not")
    if dataset.name == "synthetic":
        if dataset.geometry not in ("mnist", "cifar"):
            raise ConfigError(f"dataset.geometry must be one of 'mnist', 'cifar', but got {dataset.geometry!r}")
        _check(check_positive_int, "dataset.train_size", dataset.train_size)
        _check(check_positive_int, "dataset.test_size", dataset.test_size)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first problem found in ``cfg``."""
    check_pooler(cfg.pooler)
    check_model(cfg.model, cfg.pooler)
    check_trainer(cfg.trainer)
    if cfg.trainer.theta_lr_scale != 1 and cfg.pooler.name != "tdgs":
        raise ConfigError(
            f"trainer.theta_lr_scale={cfg.trainer.theta_lr_scale} scales the TDGS temperatures' learning rate, "
            f"but pooler={cfg.pooler.name} has none; leave it at 1 or use pooler=tdgs"
        )
    check_device(cfg.device)
    check_step(cfg.trainer, resolve_device(cfg.device))
    check_dataset(cfg.dataset)
    check_loggers(cfg.get("logger") or {})
    if cfg.trainer.early_stopping_patience is not None and cfg.dataset.val_size == 0:
        raise ConfigError(
            f"trainer.early_stopping_patience={cfg.trainer.early_stopping_patience} stops on the validation "
            "accuracy, but dataset.val_size=0 holds none out; set dataset.val_size (e.g. 0.1) or leave it off"
        )
