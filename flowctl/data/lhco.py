"""LHC Olympics 2020 R&D features file: reader, writer and the CATHODE feature derivation.

The public file ``events_anomalydetection_v2.features.h5`` (Zenodo 4536377) is a pandas HDF5
store with one DataFrame of 15 columns (:data:`RAW_COLUMNS`, all GeV except the N-subjettiness
ratios and ``label``: 0 = QCD, 1 = W'→XY signal; rows are sorted by label, so shuffle before
splitting). It is read here with h5py only, for both layouts that ``DataFrame.to_hdf`` writes:

* ``format="fixed"`` (the default): a group with ``block{i}_items`` (column names) and
  ``block{i}_values [N, k]`` per dtype block, plus ``axis0`` / ``axis1``;
* ``format="table"``: a compound dataset ``KEY/table`` with ``index``, ``values_block_{i}``
  (``[N, k]`` sub-arrays, names in the ``values_block_{i}_kind`` attribute) and, for
  ``data_columns``, one field per column.

pandas and PyTables are therefore not needed at run time. :func:`write_pandas_fixed` writes the
fixed layout (used by the synthetic generator, :mod:`flowctl.data.synth.lhco`) and
:func:`write_pandas_table` the table layout (``to_hdf(..., format="table", index=False)``);
``pandas.read_hdf`` 3.1 reads both back unchanged (checked by ``tests/lhco`` when pandas and
PyTables are installed).

CATHODE features (arXiv:2109.00546; reference/anomaly.md §1.3), masses in **TeV**, jets ordered
by mass (``j1`` the lighter)::

    mjj, mj1, dmj = mj2 - mj1, tau21j1, tau21j2, label      (tau21 = tau2 / (tau1 + 1e-5))

``mjj`` is the condition; the next four are the auxiliary features.
"""

from __future__ import annotations

import pickletools
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from flowctl.data.table import DataError

__all__ = [
    "CWOLA_SB",
    "FEATURES",
    "RAW_COLUMNS",
    "SR",
    "cathode_features",
    "load_lhco",
    "mjj_tev",
    "read_lhco_raw",
    "read_pandas_hdf",
    "sideband_mask",
    "signal_region_mask",
    "write_pandas_fixed",
    "write_pandas_table",
]

#: Columns of the R&D features file, in the file's order (GeV).
RAW_COLUMNS: tuple[str, ...] = (
    "pxj1", "pyj1", "pzj1", "mj1", "tau1j1", "tau2j1", "tau3j1",
    "pxj2", "pyj2", "pzj2", "mj2", "tau1j2", "tau2j2", "tau3j2", "label",
)
#: Columns of :func:`cathode_features` (masses in TeV).
FEATURES: tuple[str, ...] = ("mjj", "mj1", "dmj", "tau21j1", "tau21j2", "label")
#: Signal region in mjj (TeV), strict inequalities.
SR: tuple[float, float] = (3.3, 3.7)
#: CWoLa-hunting sidebands: the adjacent 200 GeV strips (TeV).
CWOLA_SB: tuple[tuple[float, float], tuple[float, float]] = ((3.1, 3.3), (3.7, 3.9))
TAU_EPS = 1e-5


# --------------------------------------------------------------------------- pandas HDF5


def _s(v: object) -> str:
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def _pickled_names(blob: object) -> list[str]:
    """Column names from a pickled list of str in a pandas attribute (``(lp0\\nVpxj1\\np1...``
    in protocol 0), read with :mod:`pickletools` opcodes only (nothing is unpickled)."""
    raw = blob if isinstance(blob, (bytes, np.bytes_)) else str(blob).encode()
    try:
        return [_s(arg) for op, arg, _ in pickletools.genops(bytes(raw))
                if op.name in _PICKLE_STR_OPS and isinstance(arg, (str, bytes))]
    except Exception:  # noqa: BLE001 - a malformed attribute means "no names"
        return []


#: pickle opcodes that push a string (protocol 0 from pandas 3; binary ones from old writers).
_PICKLE_STR_OPS = frozenset({"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                             "STRING", "BINSTRING", "SHORT_BINSTRING"})


def _frame_keys(f: h5py.File) -> list[str]:
    keys: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Group) and "pandas_type" in obj.attrs:
            keys.append(name)

    f.visititems(visit)
    return keys


def read_pandas_hdf(path: str | Path, key: str | None = None) -> dict[str, np.ndarray]:
    """Read one DataFrame written by ``pandas.DataFrame.to_hdf`` (``fixed`` or ``table``
    format) into ``{column: [N] array}`` in file order, with h5py only.

    ``key=None`` takes the store's single frame (the LHCO files are read without a key)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file (set data.path=FILE)")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"{p}: cannot open as HDF5 ({exc})") from None
    with f:
        keys = _frame_keys(f)
        if key is None:
            if len(keys) != 1:
                raise DataError(f"{p}: expected one pandas DataFrame, found "
                                f"{len(keys)} ({', '.join(keys) or 'none'}); pass a key")
            key = keys[0]
        key = key.strip("/")
        if key not in keys:
            raise DataError(f"{p}: no pandas DataFrame at key {key!r}; "
                            f"keys: {', '.join(keys) or 'none'}")
        g = f[key]
        kind = _s(g.attrs["pandas_type"])
        if kind == "frame":
            return _read_fixed(p, key, g)
        if kind == "frame_table":
            return _read_table(p, key, g)
        raise DataError(f"{p}:{key}: unsupported pandas object {kind!r} (need a DataFrame)")


def _read_fixed(p: Path, key: str, g: h5py.Group) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    order = [_s(c) for c in g["axis0"][()]] if "axis0" in g else None
    for i in range(int(g.attrs.get("nblocks", 0))):
        items = [_s(c) for c in g[f"block{i}_items"][()]]
        vals = np.asarray(g[f"block{i}_values"][()])
        if vals.ndim != 2 or vals.shape[1] != len(items):
            raise DataError(f"{p}:{key}/block{i}_values: shape {vals.shape} does not match "
                            f"{len(items)} columns")
        for j, c in enumerate(items):
            out[c] = vals[:, j]
    if order is not None and set(order) == set(out):
        out = {c: out[c] for c in order}
    return out


def _read_table(p: Path, key: str, g: h5py.Group) -> dict[str, np.ndarray]:
    if "table" not in g:
        raise DataError(f"{p}:{key}: pandas table without a 'table' dataset")
    t = g["table"]
    data = t[()]
    out: dict[str, np.ndarray] = {}
    for field in data.dtype.names or ():
        if field == "index":
            continue
        m = re.fullmatch(r"values_block_\d+", field)
        if m:
            names = _pickled_names(t.attrs.get(f"{field}_kind", b""))
            vals = np.asarray(data[field]).reshape(len(data), -1)
            if len(names) != vals.shape[1]:
                raise DataError(f"{p}:{key}/table: cannot read the column names of {field}")
            for j, c in enumerate(names):
                out[c] = vals[:, j]
        else:
            out[field] = np.asarray(data[field])
    order = _pickled_names(g.attrs.get("non_index_axes", b""))
    if order and set(order) == set(out):
        out = {c: out[c] for c in order}
    return out


def _str_type(size: int, utf8: bool) -> h5py.h5t.TypeID:
    t = h5py.h5t.C_S1.copy()
    t.set_size(max(size, 1))
    t.set_strpad(h5py.h5t.STR_NULLTERM)
    t.set_cset(h5py.h5t.CSET_UTF8 if utf8 else h5py.h5t.CSET_ASCII)
    return t


def _set_attrs(obj: h5py.HLObject, attrs: Mapping[str, object]) -> None:
    """Attributes as PyTables writes them: str -> scalar UTF-8 null-terminated (``""`` -> a
    null-space one), bytes -> ASCII (pickle blobs), numbers as numpy scalars."""
    for name, v in attrs.items():
        if isinstance(v, (str, bytes)):
            raw = v.encode() if isinstance(v, str) else v
            tid = _str_type(len(raw) + (1 if not raw else 0), utf8=isinstance(v, str))
            if raw:
                space = h5py.h5s.create(h5py.h5s.SCALAR)
                aid = h5py.h5a.create(obj.id, name.encode(), tid, space)
                aid.write(np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)
            else:
                space = h5py.h5s.create(h5py.h5s.NULL)
                h5py.h5a.create(obj.id, name.encode(), tid, space)
        else:
            obj.attrs[name] = v


def _string_dataset(g: h5py.Group, name: str, values: Sequence[str]) -> h5py.Dataset:
    raw = [v.encode() for v in values]
    width = max(len(r) for r in raw)
    tid = _str_type(width, utf8=False)
    space = h5py.h5s.create_simple((len(raw),))
    did = h5py.h5d.create(g.id, name.encode(), tid, space)
    did.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{width}"), mtype=tid)
    return g[name]


def _frame_values(columns: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Column names and their values as one float64 block ``[N, k]``."""
    names = list(columns)
    return names, np.stack([np.asarray(columns[c], np.float64) for c in names], axis=1)


@contextmanager
def _pytables_group(path: str | Path, key: str, attrs: Mapping[str, object]
                    ) -> Iterator[h5py.Group]:
    """The group ``KEY`` of a new HDF5 file laid out as PyTables writes one (root and group
    attributes, group attributes ``attrs`` added); written under a temporary name and moved
    onto ``path`` only when the block finishes, so a failure leaves no half-written file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            _set_attrs(f, {"CLASS": "GROUP", "PYTABLES_FORMAT_VERSION": "2.1", "TITLE": "",
                           "VERSION": "1.0"})
            g = f.create_group(key)
            _set_attrs(g, {"CLASS": "GROUP", "TITLE": "", "VERSION": "1.0", **attrs})
            yield g
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(p)


def write_pandas_fixed(path: str | Path, columns: Mapping[str, np.ndarray],
                       key: str = "df") -> Path:
    """Write ``{column: [N] float array}`` as ``DataFrame.to_hdf(path, key=key)`` (fixed
    format, one float64 block, RangeIndex) does, with h5py: same groups, datasets, string
    types and attributes, so ``pandas.read_hdf`` reads it back unchanged."""
    names, vals = _frame_values(columns)
    n = vals.shape[0]
    with _pytables_group(path, key, {
            "axis0_variety": "regular", "axis1_variety": "regular",
            "block0_items_variety": "regular", "encoding": "UTF-8", "errors": "strict",
            "nblocks": np.int64(1), "ndim": np.int64(2), "pandas_type": "frame",
    }) as g:
        array = {"CLASS": "ARRAY", "FLAVOR": "numpy", "TITLE": "", "VERSION": "2.4",
                 "transposed": np.uint8(1)}
        strings = {**array, "kind": "string", "name": b"N.", "nan_rep": ""}
        _set_attrs(_string_dataset(g, "axis0", names), strings)
        _set_attrs(g.create_dataset("axis1", data=np.arange(n, dtype=np.int64)),
                   {**array, "kind": "integer", "name": b"N."})
        _set_attrs(_string_dataset(g, "block0_items", names), strings)
        _set_attrs(g.create_dataset("block0_values", data=vals), array)
    return Path(path)


def _pickle0(obj: object) -> bytes:
    """Protocol-0 pickle of plain lists/tuples/dicts of str and int, as pandas stores its
    table metadata (written, never read back with pickle)."""
    import pickle

    return pickle.dumps(obj, protocol=0)


def write_pandas_table(path: str | Path, columns: Mapping[str, np.ndarray],
                       key: str = "df") -> Path:
    """Write ``{column: [N] float array}`` as ``DataFrame.to_hdf(path, key=key,
    format="table", index=False)`` does (one float64 values block, RangeIndex, no PyTables
    index), with h5py: a compound dataset ``KEY/table`` of ``(index, values_block_0 [k])``
    plus the group and table attributes pandas reads (text as UTF-8 strings, pickled
    metadata as ASCII bytes, as PyTables stores them)."""
    names, vals = _frame_values(columns)
    n = vals.shape[0]
    dt = np.dtype([("index", "<i8"), ("values_block_0", "<f8", (len(names),))])
    rows = np.zeros(n, dt)
    rows["index"] = np.arange(n)
    rows["values_block_0"] = vals
    with _pytables_group(path, key, {
            "data_col_nan_rep": np.uint8(1), "data_columns": _pickle0([]),
            "encoding": "UTF-8", "errors": "strict",
            "index_cols": _pickle0([(0, "index")]),
            "info": _pickle0({1: {"names": [None], "type": "Index"}, "index": {},
                              "values_block_0": {}}),
            "levels": np.int64(1), "mi_level_nan_rep": np.uint8(0), "nan_rep": "N.",
            "non_index_axes": _pickle0([(1, names)]), "pandas_type": "frame_table",
            "table_type": "appendable_frame", "values_cols": _pickle0(["values_block_0"]),
    }) as g:
        t = g.create_dataset("table", data=rows, maxshape=(None,),
                             chunks=(max(1, min(n, 4096)),))
        _set_attrs(t, {
            "CLASS": "TABLE", "FIELD_0_FILL": np.int64(0), "FIELD_0_NAME": "index",
            "FIELD_1_FILL": np.float64(0.0), "FIELD_1_NAME": "values_block_0",
            "NROWS": np.int64(n), "TITLE": "", "VERSION": "2.7", "index_kind": "integer",
            "values_block_0_dtype": "float64", "values_block_0_kind": _pickle0(names),
            "values_block_0_meta": "N.",
        })
    return Path(path)


# --------------------------------------------------------------------------- LHCO


def read_lhco_raw(path: str | Path, key: str | None = None) -> np.ndarray:
    """The 15 :data:`RAW_COLUMNS` ``[N, 15]`` (float64, GeV) of an LHCO R&D features file.

    Extra columns are ignored; a missing column, an empty file or NaN/inf fail with one line
    naming the file and key."""
    cols = read_pandas_hdf(path, key)
    where = f"{path}" + (f":{key}" if key else "")
    missing = [c for c in RAW_COLUMNS if c not in cols]
    if missing:
        raise DataError(f"{where}: missing LHCO column(s) {', '.join(missing)}; "
                        f"found: {', '.join(cols) or 'none'}")
    x = np.stack([np.asarray(cols[c], np.float64) for c in RAW_COLUMNS], axis=1)
    if x.shape[0] == 0:
        raise DataError(f"{where}: the file holds no events")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        names = [RAW_COLUMNS[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise DataError(f"{where}: {len(rows)} event(s) with NaN/inf in {', '.join(names)} "
                        f"(first row {rows[0]})")
    return x


def mjj_tev(raw: np.ndarray) -> np.ndarray:
    """Dijet invariant mass ``[N]`` in TeV from raw rows ``[N, 15]`` (GeV), with
    ``E = sqrt(|p|^2 + m^2)`` per jet; negative m^2 from rounding is clipped to 0."""
    p1, m1 = raw[:, 0:3], raw[:, 3]
    p2, m2 = raw[:, 7:10], raw[:, 10]
    e1 = np.sqrt((p1**2).sum(1) + m1**2)
    e2 = np.sqrt((p2**2).sum(1) + m2**2)
    m2jj = (e1 + e2) ** 2 - ((p1 + p2) ** 2).sum(1)
    return np.sqrt(np.clip(m2jj, 0.0, None)) / 1000.0


def cathode_features(raw: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """CATHODE features ``[N, 6]`` = :data:`FEATURES` from raw rows ``[N, 15]`` (GeV).

    Masses in TeV, jets ordered by mass, ``tau21 = tau2 / (tau1 + 1e-5)``. ``shift > 0`` adds
    ``shift * mjj`` to ``mj1`` and ``dmj`` (CATHODE's ``--datashift`` robustness test)."""
    raw = np.asarray(raw, np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(RAW_COLUMNS):
        raise DataError(f"expected raw LHCO rows [N, {len(RAW_COLUMNS)}], got {raw.shape}")
    mjj = mjj_tev(raw)
    m1, m2 = raw[:, 3], raw[:, 10]
    t1 = raw[:, 5] / (raw[:, 4] + TAU_EPS)
    t2 = raw[:, 12] / (raw[:, 11] + TAU_EPS)
    swap = m2 < m1
    mlo = np.where(swap, m2, m1) / 1000.0
    mhi = np.where(swap, m1, m2) / 1000.0
    tlo = np.where(swap, t2, t1)
    thi = np.where(swap, t1, t2)
    dm = mhi - mlo
    if shift:
        mlo = mlo + shift * mjj
        dm = dm + shift * mjj
    return np.stack([mjj, mlo, dm, tlo, thi, raw[:, 14]], axis=1)


def load_lhco(path: str | Path, key: str | None = None, shift: float = 0.0) -> np.ndarray:
    """Read an LHCO R&D features file and return :func:`cathode_features` ``[N, 6]``."""
    return cathode_features(read_lhco_raw(path, key), shift=shift)


def signal_region_mask(mjj: np.ndarray, sr: Sequence[float] = SR) -> np.ndarray:
    """``[N]`` bool: ``sr[0] < mjj < sr[1]`` (TeV, strict)."""
    mjj = np.asarray(mjj)
    return (mjj > sr[0]) & (mjj < sr[1])


def sideband_mask(mjj: np.ndarray, sr: Sequence[float] = SR,
                  width: float | None = None) -> np.ndarray:
    """``[N]`` bool: outside the SR (``mjj <= sr[0]`` or ``>= sr[1]``, TeV).

    ``width`` keeps only the adjacent strips ``[sr[0]-width, sr[0]]`` and
    ``[sr[1], sr[1]+width]`` (CWoLa hunting: ``width=0.2`` gives :data:`CWOLA_SB`)."""
    mjj = np.asarray(mjj)
    sb = ~signal_region_mask(mjj, sr)
    if width is not None:
        sb &= (mjj >= sr[0] - width) & (mjj <= sr[1] + width)
    return sb
