"""Helpers shared by the applications: user errors, run directories, metrics.json, ranks."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from flowctl.atomic import write_text

__all__ = [
    "ResultError",
    "UserError",
    "build_flow",
    "check_finite",
    "check_run_dir",
    "find_checkpoint",
    "is_main_process",
    "json_safe",
    "load_weights",
    "read_config",
    "read_metrics_jsonl",
    "update_metrics_json",
    "write_config",
]


class UserError(Exception):
    """A mistake in what the user asked for; the CLI prints it as one line and exits 2."""


class ResultError(Exception):
    """A command produced something unusable (e.g. non-finite samples); it is not written,
    the CLI prints this one line and exits 1."""


def check_finite(x: Any, what: str, run_dir: str | Path) -> None:
    """Raise :class:`ResultError` if the array ``x`` holds NaN or inf (rows counted)."""
    import numpy as np

    a = np.asarray(x)
    if a.size == 0 or np.isfinite(a).all():
        return
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(1) if a.ndim > 1 else ~np.isfinite(a)
    raise ResultError(f"{what} of run {run_dir}: {int(bad.sum())} of {len(a)} rows are NaN or "
                      "inf; nothing was written (the flow's weights are unusable: retrain it)")


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


def write_config(run_dir: str | Path, cfg: Mapping[str, Any]) -> Path:
    """Write the resolved config of a run to ``run_dir/config.yaml`` (rank 0 only)."""
    path = Path(run_dir) / "config.yaml"
    if is_main_process():
        write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
    return path


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read ``run_dir/config.yaml``."""
    with open(Path(run_dir) / "config.yaml") as fh:
        return yaml.safe_load(fh) or {}


def json_safe(obj: Any, path: str = "", bad: dict[str, str] | None = None) -> Any:
    """``obj`` as strict-JSON data: numpy scalars/arrays to Python, NaN/inf to ``None``.

    Each replaced value is recorded in ``bad`` as ``{"dotted.path": "nan" | "inf" | "-inf"}``.
    """
    import math

    import numpy as np

    if isinstance(obj, Mapping):
        return {str(k): json_safe(v, f"{path}.{k}" if path else str(k), bad)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), path, bad)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if hasattr(obj, "item") and hasattr(obj, "numel") and obj.numel() == 1:  # 0-d tensor
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if bad is not None:
            bad[path] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def update_metrics_json(run_dir: str | Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``run_dir/metrics.json`` (rank 0 only) and return the result.

    The file is strict JSON: a NaN or infinite number is written as ``null`` and its key is
    listed, with the value it had, under ``nonfinite`` of its section (e.g.
    ``{"evaluate": {"kl": null, "nonfinite": {"kl": "nan"}}}``). A corrupt existing file is
    kept as ``metrics.json.corrupt`` (one warning line) instead of being silently dropped.
    """
    import sys

    path = Path(run_dir) / "metrics.json"
    current: dict[str, Any] = {}
    if path.exists():
        problem = None
        try:
            current = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            problem = str(exc)
        if problem is None and not isinstance(current, dict):
            problem = f"a JSON {type(current).__name__}, not an object"
        if problem is not None:
            current = {}
            if is_main_process():
                keep = path.with_name("metrics.json.corrupt")
                os.replace(path, keep)
                print(f"warning: {path} was not valid JSON ({problem}); kept it as {keep} and "
                      "started a new one", file=sys.stderr)
    for section, value in values.items():
        bad: dict[str, str] = {}
        clean = json_safe(value, "", bad)
        if bad and isinstance(clean, dict):
            clean["nonfinite"] = bad
        elif bad:
            clean = {"value": None, "nonfinite": {"value": bad[""]}}
        current[str(section)] = clean
    if is_main_process():
        write_text(path, json.dumps(current, indent=2, sort_keys=True, allow_nan=False) + "\n")
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
