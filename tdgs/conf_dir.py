"""Where tdgs-train's configuration lives (no torch needed to find it)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _conf_dir() -> str:
    """conf/, installed as the package tdgs.conf; or, for a source tree on PYTHONPATH that was never
    installed (a GPU machine, say), the tree's own conf/ beside tdgs/."""
    try:
        return str(files("tdgs.conf"))
    except ModuleNotFoundError:
        return str(Path(__file__).resolve().parent.parent / "conf")


CONF_DIR = _conf_dir()
