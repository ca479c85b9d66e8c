"""Helpers shared by the applications: user errors, run directories, metrics.json, ranks."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "UserError",
    "build_flow",
    "check_run_dir",
    "find_checkpoint",
    "is_main_process",
    "load_weights",
    "read_config",
    "read_metrics_jsonl",
    "update_metrics_json",
    "write_config",
]


class UserError(Exception):
    """A mistake in what the user asked for; the CLI prints it as one line and exits 2."""


def build_flow(spec: Mapping[str, Any]) -> Any:
    """``flowctl.flows.build(spec)``, its errors turned into one-line :class:`UserError` s."""
    from flowctl.flows import build

    try:
        return build(spec)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"flow config: {exc}") from None


def is_main_process() -> bool:
    """True on the process that writes files (rank 0, or no distributed launch)."""
    return int(os.environ.get("RANK", "0")) == 0


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_config(run_dir: str | Path, cfg: Mapping[str, Any]) -> Path:
    """Write the resolved config of a run to ``run_dir/config.yaml`` (rank 0 only)."""
    path = Path(run_dir) / "config.yaml"
    if is_main_process():
        _atomic_write(path, yaml.safe_dump(dict(cfg), sort_keys=False))
    return path


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read ``run_dir/config.yaml``."""
    with open(Path(run_dir) / "config.yaml") as fh:
        return yaml.safe_load(fh) or {}


def update_metrics_json(run_dir: str | Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``run_dir/metrics.json`` (rank 0 only) and return the result."""
    path = Path(run_dir) / "metrics.json"
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except json.JSONDecodeError:
            current = {}
    current.update(values)
    if is_main_process():
        _atomic_write(path, json.dumps(current, indent=2, sort_keys=True, default=float) + "\n")
    return current


def read_metrics_jsonl(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per-epoch records from ``run_dir/metrics.jsonl`` (empty when absent)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def find_checkpoint(run_dir: str | Path, prefer: str = "best") -> Path | None:
    """``checkpoints/best.pt`` (or ``last.pt``) of a run, whichever exists first."""
    ckdir = Path(run_dir) / "checkpoints"
    for name in (prefer, "best" if prefer == "last" else "last"):
        p = ckdir / f"{name}.pt"
        if p.exists():
            return p
    return None


def load_weights(model: Any, run_dir: str | Path, which: str = "best") -> Any:
    """Load a run's ``best`` (or ``last``) checkpoint into ``model`` (built from the run's
    config) and put it in eval mode; every failure is one :class:`UserError` line."""
    from flowctl.training import TrainingError, load_checkpoint

    path = find_checkpoint(run_dir, which)
    if path is None:
        raise UserError(f"run directory {run_dir} has no checkpoint (checkpoints/best.pt)")
    try:
        ckpt = load_checkpoint(path)
    except TrainingError as exc:
        raise UserError(str(exc)) from None
    state = {k.removeprefix("module."): v for k, v in ckpt.get("model", ckpt).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"run directory {run_dir} is incompatible: {path.name} does not match "
                        f"the flow in config.yaml ({first})") from None
    return model.eval()


def check_run_dir(run_dir: str | Path, need_checkpoint: bool = True) -> Path:
    """Raise :class:`UserError` saying why ``run_dir`` is not a usable trained run."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is not a directory")
    if not (run_dir / "config.yaml").exists():
        raise UserError(
            f"run directory {run_dir} is not a flowctl run: it has no config.yaml "
            "(made by `flowctl train`)"
        )
    if need_checkpoint and find_checkpoint(run_dir) is None \
            and not any((run_dir / "checkpoints").glob("*.pt")):
        raise UserError(
            f"run directory {run_dir} has no checkpoint (checkpoints/best.pt or last.pt): "
            "its training has not written one yet"
        )
    return run_dir
