"""Exceptions raised by the trainer; each carries a one-line, user-facing message."""

from __future__ import annotations

import signal


class TrainingError(RuntimeError):
    """A training run cannot start or go on; ``str(err)`` is a one-line message for users."""


class ConfigError(TrainingError, ValueError):
    """A trainer config key has a wrong type or value: the user's mistake (the CLI exits 2)."""


class TrainingInterrupted(TrainingError):
    """Training stopped on SIGTERM/SIGINT after writing ``last.pt``; resume with ``resume=true``.

    ``exit_code`` is the conventional shell status for the signal: 143 (SIGTERM), 130 (SIGINT).
    """

    def __init__(self, signum: int, checkpoint: str | None = None) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        where = f"; state saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"training interrupted by {name}{where}; rerun with trainer.resume=true")

    @property
    def exit_code(self) -> int:
        """Shell exit status for the signal (128 + signal number)."""
        return 128 + self.signum
