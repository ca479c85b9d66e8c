"""Applications: the one place that knows both a dataset and a model.

Each application is a module with a ``COMMANDS`` mapping from subcommand name to a function
``fn(cfg: dict, run_dir: Path) -> dict`` (the summary that also lands in metrics.json).
A config selects its application with the top-level key ``app``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from flowctl.apps.common import UserError

__all__ = ["APPS", "UserError", "load_app"]

APPS: dict[str, str] = {
    "density": "flowctl.apps.density",
    "integration": "flowctl.apps.integration",
    "calo": "flowctl.apps.calo",
    "posterior": "flowctl.apps.posterior",
    "reweight": "flowctl.apps.reweight",
    "discflow": "flowctl.apps.discflow",
    "anomaly": "flowctl.apps.anomaly",
    "gaia": "flowctl.apps.gaia",
}


def load_app(name: str | None) -> ModuleType:
    """Import the application module named by a config's ``app`` key."""
    if name is None:
        raise UserError(f"the config has no 'app' key; set app to one of: {', '.join(APPS)}")
    if name not in APPS:
        raise UserError(f"unknown app {name!r}; available apps: {', '.join(APPS)}")
    return importlib.import_module(APPS[name])
