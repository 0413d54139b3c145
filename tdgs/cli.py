"""``tdgs-train``, the Hydra app over ``conf/`` (see README); ``tdgs-report`` is
:func:`tdgs.report.main.entry`, which imports no torch."""

from __future__ import annotations

import contextlib
import importlib.util
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

from .callbacks import is_search
from .config import CONF_DIR, register_configs
from .errors import ConfigError, DatasetUnavailable, Interrupted, OutputError, TrainingDiverged
from .results import run_status
from .train import train, wants_resume

log = logging.getLogger("tdgs")
logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's and MLflow's databases: no line per plugin
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


def job_device(device: str, launcher, job_num: int, gpus: int, sweep_dir: Path, held: contextlib.ExitStack) -> str:
    """The device of job ``job_num`` of a sweep: with ``device=auto`` and local parallel jobs
    (``hydra/launcher=local_parallel``) on a machine with ``gpus`` > 1 visible GPUs, the first GPU
    from ``job_num mod gpus`` on that no other job of the sweep holds (a lock file in the sweep
    folder, kept in ``held`` until the job ends; every GPU held: ``job_num mod gpus``), so that the
    jobs use every GPU (Hydra's launchers place none); otherwise ``device`` as given (an explicit
    ``cuda:N`` wins; a SLURM job keeps its allocation)."""
    parallel = str(launcher.get("_target_", "")).endswith("JoblibLauncher")
    if device != "auto" or not parallel or gpus < 2:
        return device
    from filelock import FileLock, Timeout

    for gpu in [(job_num + k) % gpus for k in range(gpus)]:
        lock = FileLock(str(sweep_dir / f".gpu{gpu}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        held.callback(lock.release)
        return f"cuda:{gpu}"
    return f"cuda:{job_num % gpus}"


FAILED = float("-inf")  # what a sweeper is given for a job that failed: the worst (the search goes on)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def train_main(cfg: DictConfig) -> float:
    """Train one model (or, with ``-m``, one job of a sweep); return its best validation accuracy
    (what a sweeper optimises; :data:`FAILED` for a job that failed)."""
    with contextlib.ExitStack() as held:
        return _train_main(cfg, held)


def _train_main(cfg: DictConfig, held: contextlib.ExitStack) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if cfg.trainer.threads is None:  # parallel jobs share the machine's cores instead of fighting
        with open_dict(cfg):
            cfg.trainer.threads = threads_per_job(hydra_cfg.launcher)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    if sweeping:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        with open_dict(cfg):
            cfg.device = job_device(cfg.device, hydra_cfg.launcher, hydra_cfg.job.num, gpus, run_dir.parent, held)
    if sweeping and is_search(hydra_cfg.sweeper) and wants_resume(cfg) and run_status(run_dir) == "failed":
        log.warning(f"{run_dir}: a trial that failed stays failed when its search resumes (the sampler replays it)")
        return FAILED
    try:
        summary = train(cfg, run_dir)
    except (ConfigError, DatasetUnavailable, TrainingDiverged, OutputError) as error:  # the user's to fix: one line
        log.error(f"{error}")
        if sweeping:  # the other jobs go on; summary.csv says failed, and the sweep's end reports it
            return FAILED
        sys.exit(2 if isinstance(error, ConfigError) else 1)
    except Interrupted as error:
        log.warning(f"{error} received: stopped after the last finished epoch; resume=true continues it ({run_dir})")
        sys.exit(128 + error.signum)
    except Exception:  # a bug: its traceback, and in a sweep the other jobs still run
        if not sweeping:
            raise
        log.exception(f"job failed; its summary.csv in {run_dir} says so")
        return FAILED
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


def main() -> None:
    """The ``tdgs-train`` console script: a search whose sweeper plugin is missing is refused in
    one line (Hydra's own answer is a page), then :func:`train_main`."""
    searching = any(arg.startswith(("hparams_search=", "hydra/sweeper=optuna")) for arg in sys.argv[1:])
    if searching and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        print(
            "tdgs-train: hparams_search needs Hydra's Optuna sweeper, not installed: pip install 'tdgs[optuna]'",
            file=sys.stderr,
        )
        sys.exit(2)
    train_main()


if __name__ == "__main__":  # python -m tdgs.cli: tdgs-train without the installed script
    main()
