"""Errors of the integration machinery; each message is one line for users."""

from __future__ import annotations

from flowctl.training import TrainingError

__all__ = ["IntegrationError", "NonFiniteError"]


class IntegrationError(ValueError):
    """A setting of the integration (trainer, channels, grid) is invalid; the app turns it
    into a one-line :class:`flowctl.apps.common.UserError` (exit 2)."""


class NonFiniteError(TrainingError):
    """The integrand (or a loss) gave too many non-finite values; the run stops (exit 1)."""
