"""A trained composite sampler (a flow on a grid, or a mixture of channels) as a plain-data
checkpoint, loadable with ``weights_only=True`` into :func:`~.sampler.build_sampler`'s
sampler of the same config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from flowctl.integration.sampler import TrainReport
from flowctl.integration.trainer import FORMAT

__all__ = ["save_sampler"]


def save_sampler(sampler: nn.Module, path: Path, cfg: dict[str, Any], report: TrainReport
                 ) -> Path:
    """Write ``sampler``'s state (tensors only), the training counts and the run's config
    atomically to ``path``."""
    from flowctl.training import CHECKPOINT_FORMAT_VERSION, save_checkpoint

    return save_checkpoint({
        "format_version": CHECKPOINT_FORMAT_VERSION, "kind": FORMAT,
        "model": {k: v.detach().cpu() for k, v in sampler.state_dict().items()},
        "calls": report.calls, "steps": report.steps, "online_steps": report.online_steps,
        "channels": report.channels, "channel_alpha": report.channel_alpha, "config": cfg},
        path)
