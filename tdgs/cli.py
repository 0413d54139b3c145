"""Command-line entry points. ``tdgs-train``: the Hydra app over ``conf/`` (see README)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import register_configs
from .data import DatasetUnavailable
from .train import train

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("tdgs")

register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def train_main(cfg: DictConfig) -> float:
    """Train one model (or, with ``-m``, one job of a sweep); return its final test accuracy."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train(cfg, run_dir)
    except DatasetUnavailable as error:  # the user's to fix: one line, no traceback
        log.error(f"{error}")
        sys.exit(1)
    log.info(
        f"done: test accuracy {summary['test_acc']:.2f}% (best {summary['best_test_acc']:.2f}% at "
        f"epoch {summary['best_epoch']}), {summary['train_seconds']:.1f}s; results in {run_dir}"
    )
    return summary["test_acc"]
