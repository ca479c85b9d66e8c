"""Atomic file writes: a temp file in the target's folder, fsync, rename; nothing half-written.

Every file flowctl writes into a run directory goes through :func:`write_with` (or the helpers
built on it), so that

* a reader, or a resume after a crash, sees the old file or the new one, never a mix;
* on any error (disk full, permission, a kill during the write) the temp file is removed;
* the file gets the user's umask (``0644`` by default), not ``mkstemp``'s ``0600``, so that
  colleagues can read a shared run;
* an ``OSError`` always carries the path it was about (``err.filename``), so the CLI can print
  one line naming it.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["file_mode", "write_bytes", "write_h5", "write_npz", "write_text", "write_with"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the process's umask (``0o644`` for umask 022)."""
    return 0o666 & ~_current_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _with_path(err: OSError, path: Path) -> OSError:
    """The same error, naming ``path`` (``write()`` errors such as ENOSPC carry no name)."""
    if err.filename:
        return err
    new = OSError(err.errno, err.strerror or str(err), str(path))
    new.__cause__ = err
    return new


def write_with(path: str | Path, write: Callable[[IO[bytes]], Any], fsync: bool = True) -> Path:
    """Atomically create or replace ``path`` with what ``write(fh)`` writes to a binary file.

    The folder is created if needed. Raises ``OSError`` with ``filename`` set on I/O failure;
    any exception leaves ``path`` as it was and no temp file behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _with_path(err, path) from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _with_path(err, path) from None
        raise
    if fsync:
        _fsync_dir(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    """Atomically write ``data`` to ``path``."""
    return write_with(path, lambda fh: fh.write(data), fsync=fsync)


def write_text(path: str | Path, text: str, fsync: bool = True) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_npz(path: str | Path, **arrays: Any) -> Path:
    """Atomically write a compressed ``.npz`` of ``arrays`` (built in memory first)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_with(path, lambda fh: fh.write(buf.getbuffer()))


def write_h5(path: str | Path, datasets: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
             compression: str | None = "gzip", compression_level: int = 1,
             dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Atomically write an HDF5 file with ``datasets`` (name -> array), root ``attrs`` and
    per-dataset ``dataset_attrs`` (name -> attrs).

    The file is built in memory and then written with ordinary Python I/O: HDF5 itself never
    writes to a full disk (which can crash the library), and a failure is a clean ``OSError``
    naming ``path``. Dataset names may contain ``/`` (groups are created).
    """
    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name, data in datasets.items():
            arr = np.asarray(data)
            kw: dict[str, Any] = {}
            if compression and arr.ndim > 0 and arr.size > 1:
                kw = {"compression": compression}
                if compression == "gzip":
                    kw["compression_opts"] = compression_level
            d = f.create_dataset(name, data=arr, **kw)
            for key, value in ((dataset_attrs or {}).get(name) or {}).items():
                d.attrs[key] = value
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return write_with(path, lambda fh: fh.write(buf.getbuffer()))
