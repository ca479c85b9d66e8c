"""Checkpoint files: atomic writes, loading, RNG state capture and plain-data conversion.

A checkpoint is a dict (see :func:`flowctl.training.trainer.train` for the keys) saved with
``torch.save``. Writes go to a temporary file in the target directory, are fsynced and then
``os.replace``-d over the target, so a reader (or a resume after a crash) never sees a
half-written file. The content is plain data (tensors, numbers, strings, lists, dicts), so
``torch.load(..., weights_only=True)`` can read it.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowctl.atomic import write_with

from .errors import TrainingError

CHECKPOINT_FORMAT_VERSION = 1
"""Bumped whenever the layout of checkpoint dicts changes incompatibly."""

TOP_DIR = "top"
"""``checkpoints/top/``: weights of the ``keep_best`` best epochs (``epoch_NNNNN.pt``)."""


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Atomically write ``state`` (a checkpoint dict) to ``path``; returns the path."""
    return write_with(path, lambda fh: torch.save(dict(state), fh))


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Atomically copy file ``src`` to ``dst`` (e.g. ``last.pt`` → ``best.pt``)."""
    with open(src, "rb") as fin:
        return write_with(dst, lambda fh: shutil.copyfileobj(fin, fh))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict written by the trainer.

    ``path`` may be a checkpoint file or a run directory (then ``checkpoints/best.pt``, else
    ``checkpoints/last.pt``). Raises :class:`TrainingError` if missing, unreadable or of a
    newer format than this code knows.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                path = path / "checkpoints" / name
                break
        else:
            raise TrainingError(f"no checkpoint in run directory {path} (checkpoints/*.pt)")
    if not path.is_file():
        raise TrainingError(f"checkpoint not found: {path}")
    ckpt = safe_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise TrainingError(f"{path} is not a flowctl checkpoint (no format_version)")
    if int(ckpt["format_version"]) > CHECKPOINT_FORMAT_VERSION:
        raise TrainingError(
            f"{path} has checkpoint format {ckpt['format_version']}, newer than this flowctl "
            f"understands ({CHECKPOINT_FORMAT_VERSION}); upgrade flowctl"
        )
    return ckpt


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never code.

    A file that holds anything else (a pickled object, which is what a malicious file holds)
    is refused with :class:`TrainingError`; there is no fallback to full unpickling.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise TrainingError(
                f"cannot read checkpoint {path}: not a file of tensors and plain data (corrupt, "
                "truncated, or another kind of pickle, which flowctl is refusing to unpickle)"
            ) from None
        raise TrainingError(
            f"refusing to load {path}: it holds a pickled {found.group(1)}, not only tensors "
            "and plain data, and unpickling it could run code"
        ) from None
    except OSError as err:
        raise TrainingError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - truncated/corrupt files raise many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise TrainingError(f"cannot read checkpoint {path}: {type(err).__name__}: "
                            f"{first[:200]} (corrupt or not a torch file)") from None


def to_plain(obj: Any) -> Any:
    """Convert mappings/sequences (e.g. an OmegaConf config) recursively to dicts/lists."""
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, Sequence) and not isinstance(obj, bytes):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def get_rng_state() -> dict[str, Any]:
    """Capture the python, numpy, torch CPU and CUDA RNG states as plain data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states captured by :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_s = state["numpy"]
    np.random.set_state((
        "MT19937",
        np.asarray(np_s["keys"].numpy(), dtype=np.uint32),
        int(np_s["pos"]),
        int(np_s["has_gauss"]),
        float(np_s["cached_gaussian"]),
    ))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def top_checkpoints(run_dir: str | Path) -> list[dict[str, Any]]:
    """The ``keep_best`` epoch snapshots of a run, best (lowest monitored loss) first.

    Each entry: ``{"epoch": int, "loss": float, "path": Path, "model": state_dict}``. Empty
    when the run kept none (``trainer.keep_best: 0``)."""
    top = Path(run_dir) / "checkpoints" / TOP_DIR
    out = []
    for f in sorted(top.glob("epoch_*.pt")):
        ck = load_checkpoint(f)
        out.append({"epoch": int(ck["epoch"]), "loss": float(ck["loss"]), "path": f,
                    "model": ck["model"]})
    return sorted(out, key=lambda t: t["loss"])
