"""LHCO R&D features reader: pandas fixed/table layouts, CATHODE features, SR/SB, errors."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.data.lhco import (
    CWOLA_SB,
    RAW_COLUMNS,
    cathode_features,
    load_lhco,
    read_lhco_raw,
    read_pandas_hdf,
    sideband_mask,
    signal_region_mask,
    write_pandas_fixed,
    write_pandas_table,
)
from flowctl.data.table import DataError

# Two hand-made events (GeV): jets along ±x, so mjj = E1 + E2.
#   event 0: j1 m=300 (heavier), j2 m=100;  event 1: j1 m=50 (lighter), j2 m=400
ROWS = np.array([
    [1500.0, 0, 0, 300.0, 0.5, 0.1, 0.05, -1500.0, 0, 0, 100.0, 0.4, 0.3, 0.2, 1.0],
    [0, 1000.0, 0, 50.0, 0.2, 0.1, 0.08, 0, -1000.0, 0, 400.0, 0.8, 0.2, 0.1, 0.0],
])


def _cols(x: np.ndarray) -> dict[str, np.ndarray]:
    return {c: x[:, j] for j, c in enumerate(RAW_COLUMNS)}


def test_features_by_hand(tmp_path: Path) -> None:
    p = write_pandas_fixed(tmp_path / "f.h5", _cols(ROWS))
    x = load_lhco(p)
    assert x.shape == (2, 6)
    mjj0 = (math.hypot(1500, 300) + math.hypot(1500, 100)) / 1000
    mjj1 = (math.hypot(1000, 50) + math.hypot(1000, 400)) / 1000
    want = np.array([
        [mjj0, 0.100, 0.200, 0.3 / (0.4 + 1e-5), 0.1 / (0.5 + 1e-5), 1.0],
        [mjj1, 0.050, 0.350, 0.1 / (0.2 + 1e-5), 0.2 / (0.8 + 1e-5), 0.0],
    ])
    np.testing.assert_allclose(x, want, rtol=1e-12)
    # shifted variant (CATHODE --datashift): mj1 and dmj move by shift * mjj
    xs = cathode_features(read_lhco_raw(p), shift=0.1)
    np.testing.assert_allclose(xs[:, 1:3] - x[:, 1:3], 0.1 * x[:, [0, 0]], rtol=1e-12)


def test_regions() -> None:
    m = np.array([3.0, 3.1, 3.2, 3.3, 3.5, 3.7, 3.8, 3.95, 5.0])
    np.testing.assert_array_equal(signal_region_mask(m), [0, 0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(sideband_mask(m), [1, 1, 1, 1, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(sideband_mask(m, width=0.2), [0, 1, 1, 1, 0, 1, 1, 0, 0])
    assert CWOLA_SB == ((3.1, 3.3), (3.7, 3.9))


def test_writer_layout(tmp_path: Path) -> None:
    p = write_pandas_fixed(tmp_path / "f.h5", _cols(ROWS))
    with h5py.File(p) as f:
        g = f["df"]
        assert g.attrs["pandas_type"] == b"frame" or g.attrs["pandas_type"] == "frame"
        assert g["block0_values"].shape == (2, 15)
        assert [c.decode() for c in g["axis0"][()]] == list(RAW_COLUMNS)
    assert list(read_pandas_hdf(p)) == list(RAW_COLUMNS)
    t = write_pandas_table(tmp_path / "t.h5", _cols(ROWS))
    with h5py.File(t) as f:
        assert f["df"].attrs["pandas_type"] in ("frame_table", b"frame_table")
        assert f["df/table"].dtype.names == ("index", "values_block_0")
        assert f["df/table"].shape == (2,)
    np.testing.assert_array_equal(read_lhco_raw(t), read_lhco_raw(p))


def test_pandas_round_trip(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tables")
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(50, 15))) + 0.1
    df = pd.DataFrame(x, columns=list(RAW_COLUMNS))
    # our fixed writer -> pandas
    write_pandas_fixed(tmp_path / "w.h5", _cols(x))
    back = pd.read_hdf(tmp_path / "w.h5")
    assert back.equals(df)
    # our table writer -> pandas (also a `where` query, which needs the table layout)
    write_pandas_table(tmp_path / "wt.h5", _cols(x))
    np.testing.assert_array_equal(pd.read_hdf(tmp_path / "wt.h5").to_numpy(), x)
    assert list(pd.read_hdf(tmp_path / "wt.h5").columns) == list(RAW_COLUMNS)
    assert len(pd.read_hdf(tmp_path / "wt.h5", where="index < 5")) == 5
    # pandas fixed / table / table with data_columns -> our reader
    df.to_hdf(tmp_path / "fixed.h5", key="df", format="fixed")
    df.to_hdf(tmp_path / "table.h5", key="events", format="table")
    df.to_hdf(tmp_path / "dc.h5", key="df", format="table", data_columns=["mj1", "label"])
    for name in ("fixed.h5", "table.h5", "dc.h5"):
        np.testing.assert_array_equal(read_lhco_raw(tmp_path / name), x)
    # mixed dtypes (an int label in its own block) and extra columns
    df2 = df.assign(label=(x[:, -1] > 1).astype(np.int64), extra=1.0)
    for fmt in ("fixed", "table"):
        df2.to_hdf(tmp_path / f"m{fmt}.h5", key="df", format=fmt)
        r = read_lhco_raw(tmp_path / f"m{fmt}.h5")
        np.testing.assert_array_equal(r[:, -1], df2["label"].to_numpy())
        np.testing.assert_array_equal(r[:, :-1], x[:, :-1])


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_lhco_raw(tmp_path / "nope.h5")
    (tmp_path / "bad.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="cannot open as HDF5"):
        read_lhco_raw(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="expected one pandas DataFrame, found 0"):
        read_lhco_raw(tmp_path / "plain.h5")
    cols = _cols(ROWS)
    del cols["tau2j2"]
    write_pandas_fixed(tmp_path / "miss.h5", cols)
    with pytest.raises(DataError, match=r"miss\.h5: missing LHCO column\(s\) tau2j2"):
        read_lhco_raw(tmp_path / "miss.h5")
    write_pandas_fixed(tmp_path / "empty.h5", _cols(ROWS[:0]))
    with pytest.raises(DataError, match=r"empty\.h5: the file holds no events"):
        read_lhco_raw(tmp_path / "empty.h5")
    bad = ROWS.copy()
    bad[1, 3] = np.nan
    write_pandas_fixed(tmp_path / "nan.h5", _cols(bad))
    with pytest.raises(DataError, match=r"nan\.h5: 1 event\(s\) with NaN/inf in mj1"):
        read_lhco_raw(tmp_path / "nan.h5")
    with pytest.raises(DataError, match="no pandas DataFrame at key 'other'"):
        read_lhco_raw(tmp_path / "nan.h5", key="other")
    for msg in ("miss", "empty", "nan"):
        try:
            read_lhco_raw(tmp_path / f"{msg}.h5")
        except DataError as e:
            assert "\n" not in str(e)


def test_pickled_names_and_no_pandas(tmp_path: Path) -> None:
    import pickle
    import subprocess
    import sys

    from flowctl.data.lhco import _pickled_names

    for proto in (0, 2, 4):
        assert _pickled_names(pickle.dumps(["pxj1", "label"], protocol=proto)) == ["pxj1", "label"]
    assert _pickled_names(b"\x80garbage") == []
    # reading never imports pandas / PyTables
    p = write_pandas_fixed(tmp_path / "f.h5", _cols(ROWS))
    code = ("import sys; from flowctl.data.lhco import load_lhco; "
            f"load_lhco({str(p)!r}); assert 'pandas' not in sys.modules; "
            "assert 'tables' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60, check=False)
    assert res.returncode == 0, res.stderr
