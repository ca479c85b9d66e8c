"""Table loader: formats, column picking, splitting and one-line errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.data.table import DataError, load_table, split


def test_formats_and_columns(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("grp/x", data=x)
    (tmp_path / "a.csv").write_text("p,q,r\n" + "\n".join(",".join(map(str, r)) for r in x))
    (tmp_path / "b.csv").write_text("\n".join(";".join(map(str, r)) for r in x) + "\n")
    assert np.array_equal(load_table(tmp_path / "a.npy"), x.astype(np.float32))
    assert np.array_equal(load_table(tmp_path / "a.h5"), x)  # single dataset: key optional
    assert np.array_equal(load_table(tmp_path / "a.h5", key="grp/x", columns=[0, 2]), x[:, [0, 2]])
    assert np.array_equal(load_table(tmp_path / "a.csv", columns=["r", "p"]), x[:, [2, 0]])
    assert np.array_equal(load_table(tmp_path / "b.csv", columns=[1]), x[:, [1]])
    assert load_table(tmp_path / "a.npy").dtype == np.float32


def test_errors_are_one_line(tmp_path: Path) -> None:
    def err(**kw: object) -> str:
        with pytest.raises(DataError) as exc:
            load_table(**kw)  # type: ignore[arg-type]
        msg = str(exc.value)
        assert "\n" not in msg
        return msg

    assert "not found" in err(path=tmp_path / "none.h5")
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((3, 2))
        f["b"] = np.zeros((3, 2))
        f["cube"] = np.zeros((3, 2, 2))
    assert "data.key" in err(path=tmp_path / "two.h5") and "a, b" in err(path=tmp_path / "two.h5")
    assert "no dataset 'c'" in err(path=tmp_path / "two.h5", key="c")
    m = err(path=tmp_path / "two.h5", key="cube")
    assert "[N, D]" in m and "(3, 2, 2)" in m
    x = np.ones((10, 2))
    x[[2, 7], 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    m = err(path=tmp_path / "nan.npy")
    assert "2 of 10 rows" in m and "2, 7" in m
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    assert "no column 'z'" in err(path=tmp_path / "h.csv", columns=["z"])
    assert "out of range" in err(path=tmp_path / "h.csv", columns=[5])
    (tmp_path / "x.txt.json").write_text("{}")
    assert "unsupported" in err(path=tmp_path / "x.txt.json")


def test_split_reproducible() -> None:
    x = np.arange(100)[:, None].astype(np.float32)
    a = split(x, (0.8, 0.1, 0.1), seed=3)
    b = split(x, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in a] == [80, 10, 10]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert sorted(np.concatenate(a)[:, 0].tolist()) == list(range(100))
    with pytest.raises(DataError):
        split(x[:1], (0.5, 0.5, 0.0))
