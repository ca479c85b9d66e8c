"""Gaia archive reader: CSV/HDF5 round trips, patch rotation, fiducial cuts, one-line errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.data.gaia import (
    COLUMNS,
    fiducial_mask,
    from_patch_frame,
    load_patch,
    patch_rotation,
    read_gaia,
    to_patch_frame,
    write_gaia,
)
from flowctl.data.lhco import write_pandas_fixed
from flowctl.data.table import DataError

CENTER = (148.6, 24.2)


def _table(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "source_id": np.arange(n, dtype=np.int64) + 10**17,
        "ra": CENTER[0] + rng.uniform(-5, 5, n),
        "dec": CENTER[1] + rng.uniform(-5, 5, n),
        "parallax": rng.uniform(0, 2, n),
        "pmra": rng.normal(0, 5, n),
        "pmdec": rng.normal(0, 5, n),
        "phot_g_mean_mag": rng.uniform(12, 21, n),
        "bp_rp": rng.uniform(0, 2, n),
        "ruwe": rng.uniform(0.8, 1.4, n),   # an extra column: ignored
        "stream": (rng.random(n) < 0.2).astype(np.int64),
    }


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    t = _table()
    p = write_gaia(tmp_path / f"g{suffix}", t)
    got = read_gaia(p, extra=["stream"])
    assert set(got) == {*COLUMNS, "stream"}      # source_id and ruwe are not read
    for c in got:
        np.testing.assert_allclose(got[c], t[c], rtol=1e-9, atol=1e-9)


def test_hdf5_layouts(tmp_path: Path) -> None:
    t = _table()
    p = tmp_path / "cols.hdf5"                    # one 1-D dataset per column, in a group
    with h5py.File(p, "w") as f:
        g = f.create_group("stars")
        for c, v in t.items():
            g[c] = v
    np.testing.assert_allclose(read_gaia(p)["pmdec"], t["pmdec"])
    np.testing.assert_allclose(read_gaia(p, key="stars")["ra"], t["ra"])
    p2 = write_pandas_fixed(tmp_path / "pandas.h5", {c: t[c] for c in COLUMNS})
    np.testing.assert_allclose(read_gaia(p2)["bp_rp"], t["bp_rp"])


def test_csv_archive_style(tmp_path: Path) -> None:
    """ECSV-style comment lines, quoted upper-case header, extra columns in other places."""
    p = tmp_path / "archive.csv"
    p.write_text("# %ECSV 1.0\n# ---\n"
                 '"SOURCE_ID","ra","dec","parallax","pmra","pmdec","phot_g_mean_mag","bp_rp"\n'
                 "1,148.6,24.2,0.5,-3.0,4.0,18.0,0.7\n"
                 "2,150.0,25.0,0.1,1.0,2.0,19.5,0.9\n")
    got = read_gaia(p)
    np.testing.assert_allclose(got["pmdec"], [4.0, 2.0])
    patch = load_patch(p, CENTER)
    assert len(patch) == 2 and patch.labels is None
    np.testing.assert_allclose([patch["phi"][0], patch["lam"][0]], [0.0, 0.0], atol=1e-9)


def test_rotation_centre_and_axes() -> None:
    ra0, dec0 = CENTER
    phi, lam, pmphi, pmlam = to_patch_frame(
        np.array([ra0, ra0, ra0]), np.array([dec0, dec0 + 5.0, dec0 - 10.0]),
        np.array([3.0, 0.0, 0.0]), np.array([4.0, 0.0, 0.0]), CENTER)
    np.testing.assert_allclose(phi, [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(lam, [0.0, 5.0, -10.0], atol=1e-9)   # north stays north
    np.testing.assert_allclose([pmphi[0], pmlam[0]], [3.0, 4.0], atol=1e-9)
    # on the equator with the centre at (ra0, 0): φ is the ra offset
    phi, lam, *_ = to_patch_frame(np.array([ra0 + 7.0]), np.array([0.0]), np.zeros(1),
                                  np.zeros(1), (ra0, 0.0))
    np.testing.assert_allclose([phi[0], lam[0]], [7.0, 0.0], atol=1e-9)
    r = patch_rotation(*CENTER)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0)


def test_rotation_preserves_proper_motion_and_inverts() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    ra = CENTER[0] + rng.uniform(-20, 20, n)
    dec = np.clip(CENTER[1] + rng.uniform(-20, 20, n), -89, 89)
    pmra, pmdec = rng.normal(0, 10, n), rng.normal(0, 10, n)
    phi, lam, pmphi, pmlam = to_patch_frame(ra, dec, pmra, pmdec, CENTER)
    np.testing.assert_allclose(np.hypot(pmphi, pmlam), np.hypot(pmra, pmdec), rtol=1e-10)
    # angular distance to the centre is kept: it is the distance of (φ, λ) to (0, 0)
    d_sky = np.arccos(np.sin(np.radians(dec)) * np.sin(np.radians(CENTER[1]))
                      + np.cos(np.radians(dec)) * np.cos(np.radians(CENTER[1]))
                      * np.cos(np.radians(ra - CENTER[0])))
    d_patch = np.arccos(np.cos(np.radians(lam)) * np.cos(np.radians(phi)))
    np.testing.assert_allclose(d_patch, d_sky, atol=1e-9)
    back = from_patch_frame(phi, lam, pmphi, pmlam, CENTER)
    for a, b in zip(back, (ra, dec, pmra, pmdec)):
        np.testing.assert_allclose(a, b, atol=1e-8)
    # a star moving along the great circle λ = 0 has μ_λ = 0
    ra1, dec1, pmra1, pmdec1 = from_patch_frame(np.array([8.0]), np.array([0.0]),
                                                np.array([5.0]), np.array([0.0]), CENTER)
    _, lam2, pmphi2, pmlam2 = to_patch_frame(ra1, dec1, pmra1, pmdec1, CENTER)
    np.testing.assert_allclose([lam2[0], pmphi2[0], pmlam2[0]], [0.0, 5.0, 0.0], atol=1e-9)


def test_patch_selection_radius(tmp_path: Path) -> None:
    t = _table(200)
    t["dec"] = CENTER[1] + np.linspace(-12, 12, 200)
    t["ra"] = np.full(200, CENTER[0])
    p = write_gaia(tmp_path / "g.h5", t)
    patch = load_patch(p, CENTER, radius=6.0)
    assert len(patch) == int((np.abs(t["dec"] - CENTER[1]) <= 6.0).sum())
    assert np.abs(patch["lam"]).max() <= 6.0 and patch.truth == "stream"
    assert patch.labels is not None and set(np.unique(patch.labels)) <= {0, 1}
    with pytest.raises(DataError, match="no star within 1.0 deg"):
        load_patch(p, (0.0, -60.0), radius=1.0)


def test_fiducial_cuts() -> None:
    cols = {  # star: passes? (reason)
        "g": np.array([20.1, 20.2, 19.0, 19.0, 19.0, 19.0, 19.0, 19.0, 19.0]),
        "bp_rp": np.array([0.7, 0.7, 0.5, 1.0, 0.49, 1.01, 0.7, 0.7, 0.7]),
        "pmphi": np.array([3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 2.0, -1.5]),
        "pmlam": np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.5, 2.0, 1.5]),
    }
    want = [True, False, True, True, False, False, True, False, False]
    assert fiducial_mask(cols).tolist() == want


def test_errors_name_file_and_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*nope\.csv"):
        read_gaia(tmp_path / "nope.csv")
    t = _table()
    del t["bp_rp"]
    p = write_gaia(tmp_path / "missing.csv", t)
    with pytest.raises(DataError, match=r"missing\.csv: missing Gaia column\(s\) bp_rp"):
        read_gaia(p)
    t = _table()
    t["pmra"][7] = np.nan
    p = write_gaia(tmp_path / "nan.h5", t)
    with pytest.raises(DataError, match=r"nan\.h5: column 'pmra' has 1 NaN.*row 7"):
        read_gaia(p)
    p = tmp_path / "null.csv"   # Gaia exports null as an empty field
    p.write_text("ra,dec,pmra,pmdec,parallax,phot_g_mean_mag,bp_rp\n1,2,3,4,5,6,\n")
    with pytest.raises(DataError, match=r"null\.csv: column 'bp_rp' has 1 NaN"):
        read_gaia(p)
    p = tmp_path / "empty.csv"
    p.write_text("ra,dec,pmra,pmdec,parallax,phot_g_mean_mag,bp_rp\n")
    with pytest.raises(DataError, match=r"empty\.csv: the table has no rows"):
        read_gaia(p)
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DataError, match="blank.csv: empty file"):
        read_gaia(tmp_path / "blank.csv")
    (tmp_path / "x.fits").write_text("")
    with pytest.raises(DataError, match="unsupported file type '.fits'"):
        read_gaia(tmp_path / "x.fits")
    t = _table()
    t["stream"] = t["stream"] * 2
    p = write_gaia(tmp_path / "truth.csv", t)
    with pytest.raises(DataError, match="truth column 'stream' must hold 0/1"):
        load_patch(p, CENTER)
