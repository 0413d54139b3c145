"""Hydra callbacks of tdgs-train (``hydra.callbacks`` in ``conf/config.yaml``): an output folder
that cannot be written, the SLURM launcher without SLURM, or an Optuna search without a validation
split, is refused in one line before any work, and a sweep whose jobs did not all complete says so
in one line and exits non-zero once every job has run."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .results import run_status

log = logging.getLogger("tdgs")


def refuse(message: str) -> None:
    """Print ``message`` as one ERROR line, as a run's log writes them (Hydra's own logging, set up
    or not at this point, would drop the level), and exit with status 1."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    handler.handle(record)
    raise SystemExit(1)


def check_writable(folder: Path, key: str) -> None:
    """Create ``folder`` and a file in it, or refuse the run (read-only, no space, not a folder)."""
    probe = folder / f".write-check.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"tdgs")
        probe.unlink()
    except OSError as error:
        refuse(f"{key}={folder} cannot be written ({error.strerror or error}); choose another folder, e.g. {key}=DIR")


def check_slurm(launcher: DictConfig) -> None:
    """The SLURM launcher where there is no SLURM (no ``sbatch``): refused in one line, not with
    submitit's traceback."""
    if str(launcher.get("_target_", "")).endswith(".SlurmLauncher") and shutil.which("sbatch") is None:
        refuse("hydra/launcher=slurm needs SLURM, but sbatch is not on PATH here; use hydra/launcher=local_parallel")


def is_search(sweeper: DictConfig) -> bool:
    """Whether Hydra's ``sweeper`` is Optuna's (``hparams_search=optuna``)."""
    return str(sweeper.get("_target_", "")).endswith("OptunaSweeper")


def check_tuning(config: DictConfig) -> None:
    """An Optuna search (``hparams_search=optuna``) tunes on the validation accuracy: refused in one
    line without a validation split, where it would get NaN from every trial."""
    if is_search(config.hydra.sweeper) and config.dataset.get("val_size", 0) == 0:
        refuse(
            "hydra/sweeper=optuna tunes on the validation accuracy, but dataset.val_size=0 holds no validation "
            "split out; set dataset.val_size (e.g. 0.1)"
        )


def failed_jobs(sweep: Path) -> tuple[list[Path], list[Path]]:
    """(every job folder of ``sweep``, those whose summary.csv does not say completed)."""
    jobs = sorted(path.parent for path in sweep.glob("*/.hydra"))
    return jobs, [job for job in jobs if run_status(job) != "completed"]


class RunChecks(Callback):
    """See the module docstring."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        check_slurm(config.hydra.launcher)  # first: a refused launch leaves no empty sweep folder
        check_tuning(config)
        check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
        from .loggers import prepare_mlflow  # here: MLflow's store made once, before parallel jobs race on it

        prepare_mlflow(config, Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        jobs, failed = failed_jobs(sweep)
        listed = f"{len(failed)} of {len(jobs)} jobs of the sweep did not complete: {', '.join(map(str, failed))}"
        if failed and is_search(config.hydra.sweeper):  # a diverged trial is an outcome of a search, not its failure
            log.warning(f"{listed}; the search counted them as its worst trials")
        elif failed:
            refuse(listed)
        else:
            log.info(f"all {len(jobs)} jobs of the sweep completed; results in {sweep}")
