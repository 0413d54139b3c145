"""The errors a run reports to its user in one line (no traceback), and how any error is told in
one line. ``tdgs-train`` exits with 2 for a :class:`ConfigError`, 1 for the others, 128 + the
signal number for :class:`Interrupted`."""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A mistake in the configuration: the key, the bad value and what is allowed."""


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing (and cannot be downloaded) or damaged."""


class OutputError(RuntimeError):
    """A run file cannot be written (read-only folder, no space left, ...)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops, keeping its finished epochs."""


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived: the run stopped at a safe point (after a training step)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def describe(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters of it), or just ``Type``
    when the message is empty."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:limit]}" if text else type(error).__name__
