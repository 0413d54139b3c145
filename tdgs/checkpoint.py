"""Per-epoch checkpoints: model, optimizer, the gradient scaler (``scaler``, 16-mixed runs only;
a checkpoint without it resumes with a fresh scaler), every RNG state, the epoch and the metrics
so far, written atomically and readable with ``torch.load(weights_only=True)``. The previous
checkpoint is kept, so that a damaged last one still leaves a good state to resume from. Beside
them, the weights of the epoch with the best validation accuracy (:data:`BEST`)."""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, describe
from .results import replace_atomic

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
BEST = "checkpoint_best.pt"  # the weights of the best-validation epoch (save_best)
KEYS = {"epoch", "model", "optimizer", "rng", "metrics", "summary", "identity"}  # required; "scaler" is optional


def rng_states() -> dict:
    """torch (CPU and CUDA), numpy and random states, as plain containers and tensors."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "random": {"version": version, "state": list(state), "gauss": gauss},
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    r = states["random"]
    random.setstate((r["version"], tuple(r["state"]), r["gauss"]))


def _save(path: Path, state: dict, before_replacing=None) -> None:
    """Write ``state`` to ``path`` in one step (``before_replacing()`` runs once it is written)."""

    def write(partial: Path) -> None:
        buffer = io.BytesIO()  # serialised in memory: a full disk then fails as an OSError, not inside torch
        torch.save(state, buffer)
        partial.write_bytes(buffer.getvalue())
        if before_replacing is not None:
            before_replacing()

    replace_atomic(path, write)


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write ``state`` as the run's checkpoint: a temporary file, then ``os.replace``; the one it
    replaces becomes the previous checkpoint."""

    def keep_previous() -> None:
        if (run_dir / CHECKPOINT).exists():
            os.replace(run_dir / CHECKPOINT, run_dir / PREVIOUS)

    _save(run_dir / CHECKPOINT, state, keep_previous)


def save_best(run_dir: Path, state: dict) -> None:
    """Write ``state`` (``epoch``, ``model``, ``val_acc``, ``test_acc``, ``inputs``: the normalisation
    the weights expect) as the run's best-validation weights, in one step."""
    _save(run_dir / BEST, state)


def best_epoch(run_dir: Path) -> int | None:
    """The epoch whose weights :data:`BEST` holds; None when there is none or it is unreadable."""
    try:
        return int(torch.load(run_dir / BEST, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # missing, truncated, foreign
        return None


def another_configuration(path: Path, theirs: dict, ours: dict) -> ConfigError:
    """The one-line refusal of a run file written by another configuration: the parts (dataset,
    model, pooler, trainer, seed) in which the identities differ."""
    parts = [part for part in ours if theirs.get(part) != ours[part]]
    hint = " (a run from before the validation split: dataset.val_size=0)" if "dataset" in parts else ""
    return ConfigError(
        f"{path} was written by another configuration (its {', '.join(parts)} differ); resume it with its "
        f"own{hint}, or choose another folder"
    )


def load_checkpoint(run_dir: Path, identity: dict) -> dict | None:
    """The newest readable checkpoint of ``run_dir`` made by the same configuration ``identity``;
    None (start from scratch) when there is none. Damaged files are reported and skipped."""
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing = KEYS - set(state) if isinstance(state, dict) else KEYS
            if missing:
                raise ValueError(f"missing {', '.join(sorted(missing))}")
        except Exception as error:  # truncated, corrupt, foreign: never a crash
            log.warning(f"{path} is unreadable ({describe(error)}); skipping it")
            continue
        if state["identity"] != identity:
            raise another_configuration(path, state["identity"], identity)
        return state
    return None
