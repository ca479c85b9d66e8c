"""Run directories as shared, inert data: one writer at a time, completion, safe reading.

* :func:`run_lock` - an exclusive ``fcntl`` lock on ``RUN/.lock`` (holding the PID, host and
  command of its holder) for every command that writes into a run. A second writer fails at
  once naming the holder; a lock left by a dead process is free again (the kernel drops
  ``flock`` locks with their process), so a killed run can be resumed without clean-up.
* :func:`mark_complete` / :func:`is_complete` - ``RUN/.complete`` is written only after a
  command that made the run succeeded; "the newest run of a config" means the newest complete
  one, so a failed or killed run never shadows an older good one.
* :func:`sanitized_config` - a run's ``config.yaml`` read as plain values: no ``hydra:``
  section, no ``defaults`` list, no ``_target_`` (all refused), interpolations made literal. Reading
  someone else's run never composes their file as a Hydra config and never runs code.
* :func:`overlay` - a private view of a run (real folders, links to its files) for reading a
  run one cannot or should not write to: new files land in the overlay, the run is untouched.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from flowctl.atomic import write_text

__all__ = ["COMPLETE_NAME", "LOCK_NAME", "RunBusy", "RunConfigError", "is_complete", "is_writable",
           "mark_complete", "overlay", "run_lock", "sanitized_config"]

LOCK_NAME = ".lock"
COMPLETE_NAME = ".complete"


class RunBusy(Exception):
    """Another live process holds the run directory's lock."""


class RunConfigError(Exception):
    """A run's ``config.yaml`` is not plain data that flowctl wrote (one-line message)."""


# --------------------------------------------------------------------------- lock

_HELD: dict[str, tuple[int, int]] = {}  # resolved path -> (fd, depth): re-entrant per process


@contextmanager
def run_lock(run_dir: str | Path, command: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` for ``command`` (re-entrant within a process).

    Raises :class:`RunBusy` naming the holder when another live process has it."""
    import fcntl

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
    else:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunBusy(f"run directory {run_dir} is in use by {holder}; wait for it to "
                          "finish or choose another run directory") from None
        except BaseException:
            os.close(fd)
            raise
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        _HELD[key] = (fd, 1)
    try:
        yield run_dir
    finally:
        fd, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (fd, depth - 1)
        else:
            del _HELD[key]
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # releases the flock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another flowctl process"
    return (f"PID {info.get('pid')} on {info.get('host')} (flowctl {info.get('command')}, "
            f"started {info.get('started')})")


# --------------------------------------------------------------------------- completion


def mark_complete(run_dir: str | Path, command: str) -> None:
    """Record that ``command`` made ``run_dir`` and finished successfully."""
    write_text(Path(run_dir) / COMPLETE_NAME,
               json.dumps({"command": command, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
               + "\n")


def is_complete(run_dir: str | Path) -> bool:
    """True when the command that made ``run_dir`` finished successfully."""
    return (Path(run_dir) / COMPLETE_NAME).is_file()


def is_writable(run_dir: str | Path) -> bool:
    """True when new files can be created in ``run_dir``."""
    return os.access(run_dir, os.W_OK | os.X_OK)


# --------------------------------------------------------------------------- reading a run


def _check_plain(node: Any, where: str, path: Path, trusted: frozenset[str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            key = f"{where}.{k}" if where else str(k)
            if k == "_target_":
                raise RunConfigError(
                    f"{path}: refusing to read this run: key {key} would make Hydra instantiate "
                    "an object; a run's config.yaml holds plain values only")
            if k == "target" and isinstance(v, str) and v.strip() and key not in trusted:
                raise RunConfigError(
                    f"{path}: {key}={v!r} imports and runs code of the run's author; if you "
                    f"trust it, pass {key}={v} on the command line")
            out[str(k)] = _check_plain(v, key, path, trusted)
        return out
    if isinstance(node, list):
        return [_check_plain(v, f"{where}[{i}]", path, trusted) for i, v in enumerate(node)]
    if isinstance(node, str):
        return node.replace("${", "\\${")  # literal text, never an interpolation
    if node is None or isinstance(node, (bool, int, float)):
        return node
    raise RunConfigError(f"{path}: {where} holds a {type(node).__name__}, not a plain value")


def sanitized_config(run_dir: str | Path, trusted: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The plain values of ``run_dir/config.yaml``, safe to hand to Hydra as data.

    A ``hydra:`` section, a ``defaults`` list (a run written by flowctl has neither) or a
    ``_target_`` anywhere is refused with :class:`RunConfigError`, and so is a ``target``
    (a user function such as ``integrand.target`` or ``simulator.target``, which is imported
    and called) unless its dotted key is in ``trusted`` (given again on the command line).
    Strings are made literal (no ``${...}`` interpolation or resolver runs).
    """
    path = Path(run_dir) / "config.yaml"
    try:
        body = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RunConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise RunConfigError(f"{path} is not valid YAML ({first})") from None
    if not isinstance(body, dict):
        raise RunConfigError(f"{path} is not a mapping of config keys")
    for key in ("hydra", "defaults"):
        if key in body:
            raise RunConfigError(
                f"{path}: refusing to read this run: it has a {key!r} section, which flowctl "
                "never writes (it could make Hydra run code); a run's config.yaml holds plain "
                "values only")
    return _check_plain(body, "", path, trusted)


def _mirror(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name in (LOCK_NAME, COMPLETE_NAME, "config.yaml", ".hydra"):
            continue
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink():
            _mirror(entry, target)
        elif not target.exists():
            target.symlink_to(entry.resolve())


@contextmanager
def overlay(run_dir: str | Path, out_dir: str | Path,
            trusted: frozenset[str] = frozenset()) -> Iterator[Path]:
    """``out_dir`` set up as a writable view of ``run_dir``: its folders recreated, its files
    linked, ``config.yaml`` replaced by its sanitized values. New or rewritten files (written by
    rename) land in ``out_dir`` only; ``run_dir`` is never written."""
    run_dir, out_dir = Path(run_dir).resolve(), Path(out_dir)
    if out_dir.resolve() == run_dir:
        raise RunConfigError(f"out={out_dir} is the run directory itself; give another folder")
    cfg = sanitized_config(run_dir, trusted)
    _mirror(run_dir, out_dir)
    write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    yield out_dir
