"""``tdgs-train``, the Hydra app over ``conf/`` (see README); ``tdgs-report`` is
:func:`tdgs.report.main.entry`, which imports no torch."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from .config import CONF_DIR, register_configs
from .errors import ConfigError, DatasetUnavailable, Interrupted, OutputError, TrainingDiverged
from .train import train

log = logging.getLogger("tdgs")

register_configs()


def config_groups() -> str:
    """``group: option, ...`` for every config group of conf/, a line each: --help's list (Hydra's
    own lists the schemas too)."""
    lines = []
    for folder in sorted({p.parent for p in Path(CONF_DIR).rglob("*.yaml")} - {Path(CONF_DIR)}):
        options = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        lines.append(f"{folder.relative_to(CONF_DIR).as_posix()}: {options}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("tdgs_groups", config_groups)
# a run folder's name says the network when it is not the deck's CNN: _resnet18
OmegaConf.register_new_resolver("tdgs_model", lambda name: "" if name == "deck_cnn" else f"_{name}")


def threads_per_job(launcher) -> int | None:
    """torch threads for one job: a SLURM job's ``cpus_per_task``; with ``n_jobs`` parallel local
    jobs, the CPU count divided among them; otherwise None (torch's default)."""
    cpus = launcher.get("cpus_per_task")
    if cpus:
        return int(cpus)
    jobs = launcher.get("n_jobs")
    if jobs is not None and int(jobs) != 1:
        count = os.cpu_count() or 1
        return max(1, count // (count if int(jobs) < 0 else int(jobs)))
    return None


def job_device(device: str, launcher, job_num: int, gpus: int) -> str:
    """The device of job ``job_num`` of a sweep: with ``device=auto`` and local parallel jobs
    (``hydra/launcher=local_parallel``) on a machine with ``gpus`` > 1 visible GPUs, ``cuda:(job_num
    mod gpus)``, so that the jobs use every GPU (Hydra's launchers place none); otherwise ``device``
    as given (an explicit ``cuda:N`` wins; a SLURM job keeps its allocation)."""
    parallel = str(launcher.get("_target_", "")).endswith("JoblibLauncher")
    return f"cuda:{job_num % gpus}" if device == "auto" and parallel and gpus > 1 else device


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def train_main(cfg: DictConfig) -> float:
    """Train one model (or, with ``-m``, one job of a sweep); return its best validation accuracy."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.trainer.threads is None:  # parallel jobs share the machine's cores instead of fighting
        with open_dict(cfg):
            cfg.trainer.threads = threads_per_job(hydra_cfg.launcher)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    if sweeping:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        with open_dict(cfg):
            cfg.device = job_device(cfg.device, hydra_cfg.launcher, hydra_cfg.job.num, gpus)
    try:
        summary = train(cfg, run_dir)
    except (ConfigError, DatasetUnavailable, TrainingDiverged, OutputError) as error:  # the user's to fix: one line
        log.error(f"{error}")
        if sweeping:  # the other jobs go on; summary.csv says failed, and the sweep's end reports it
            return float("nan")
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    except Interrupted as error:
        log.warning(f"{error} received: stopped after the last finished epoch; resume=true continues it ({run_dir})")
        sys.exit(128 + error.signum)
    except Exception:  # a bug: its traceback, and in a sweep the other jobs still run
        if not sweeping:
            raise
        log.exception(f"job failed; its summary.csv in {run_dir} says so")
        return float("nan")
    best_val_acc = summary.get("best_val_acc", math.nan)  # absent from a summary.csv older than validation
    selected = (
        ""
        if math.isnan(best_val_acc)
        else (
            f"; best validation {best_val_acc:.2f}% at epoch {int(summary['best_val_epoch'])}, "
            f"test accuracy there {summary['test_acc_at_best_val']:.2f}%"
        )
    )
    log.info(
        f"done: final test accuracy {summary['test_acc']:.2f}%{selected}, {summary['train_seconds']:.1f}s; "
        f"results in {run_dir}"
    )
    return best_val_acc  # what a sweeper optimises: never a test figure (NaN without validation)


if __name__ == "__main__":  # python -m tdgs.cli: tdgs-train without the installed script
    train_main()
