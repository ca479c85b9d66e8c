"""The independent LHCO-format generator of issue 20 (benchmarks/worlds/lhco_independent.py):
its files load through flowctl's reader and hold the physics the benchmark relies on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from flowctl.data.lhco import RAW_COLUMNS, load_lhco, read_pandas_hdf, signal_region_mask

SRC = Path(__file__).resolve().parents[2] / "benchmarks" / "worlds" / "lhco_independent.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("lhco_independent", SRC)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("indep")
    return mod.write_all(out, seed=3, n_bkg=60_000, n_sig=600, n_extra_bkg=3000,
                         n_extra_sig=3000)


def test_format_and_feature_definitions(files: dict[str, Path]) -> None:
    assert tuple(read_pandas_hdf(files["data"])) == RAW_COLUMNS
    x = load_lhco(files["data"])
    assert x.shape == (60_600, 6)
    assert x[:, 5].sum() == 600 and (np.diff(x[:, 5]) >= 0).all()     # sorted by label
    for f in files.values():
        y = load_lhco(f)
        assert (y[:, 2] >= 0).all()                                   # mj1 <= mj2
        assert ((y[:, 3:5] > 0) & (y[:, 3:5] < 1)).all()              # tau21 in (0, 1)
    bkg = load_lhco(files["extra_bkg"])
    assert signal_region_mask(bkg[:, 0]).all() and (bkg[:, 5] == 0).all()
    assert (load_lhco(files["extra_sig"])[:, 5] == 1).all()


def test_physics_the_benchmark_relies_on(files: dict[str, Path]) -> None:
    x = load_lhco(files["data"])
    b, s = x[x[:, 5] == 0], load_lhco(files["extra_sig"])
    sr_b, sr_s = signal_region_mask(b[:, 0]), signal_region_mask(s[:, 0])
    assert 0.07 < sr_b.mean() < 0.11 and 0.45 < sr_s.mean() < 0.7
    # falling mjj spectrum above the trigger turn-on
    h, _ = np.histogram(b[:, 0], bins=[2.8, 3.2, 3.6, 4.0, 4.4])
    assert (np.diff(h) < 0).all()
    # jet masses rise with mjj (scale with the jet pT)
    lo, hi = b[(b[:, 0] > 2.6) & (b[:, 0] < 2.9)], b[(b[:, 0] > 3.7) & (b[:, 0] < 4.5)]
    assert np.median(hi[:, 1] + hi[:, 2]) > 1.15 * np.median(lo[:, 1] + lo[:, 2])
    # one-prong background, two-prong-ish signal with masses near Y = 100, X = 500 GeV
    assert 0.55 < np.median(b[sr_b, 4]) < 0.8
    assert np.median(s[sr_s, 3:5]) < 0.5
    assert 0.08 < np.median(s[sr_s, 1]) < 0.12
    assert 0.4 < np.median(s[sr_s, 1] + s[sr_s, 2]) < 0.55


def test_narrow_signal_keeps_the_background(tmp_path: Path) -> None:
    """``--signal narrow``: the same background events, a signal with narrower X / Y jet
    masses and fewer lost prongs (more of it in the SR) than the default broad one."""
    spec = importlib.util.spec_from_file_location("lhco_independent", SRC)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = {}
    for shape in ("broad", "narrow"):
        rng = np.random.default_rng(5)
        rows[shape] = (mod.background(rng, 2000), mod.signal(rng, 4000, shape))
    assert np.array_equal(rows["broad"][0], rows["narrow"][0])
    spread = {}
    for shape, (_, sig) in rows.items():
        mod.write_frame(tmp_path / f"{shape}.h5", sig)
        s = load_lhco(tmp_path / f"{shape}.h5")
        sr = signal_region_mask(s[:, 0])
        q = np.quantile(s[sr, 1], [0.25, 0.75])          # lighter jet: Y(100 GeV)
        spread[shape] = ((q[1] - q[0]) / np.median(s[sr, 1]), sr.mean())
        assert 0.08 < np.median(s[sr, 1]) < 0.12
    assert spread["narrow"][0] < 0.6 * spread["broad"][0]
    assert spread["narrow"][1] > spread["broad"][1] + 0.05
    with pytest.raises(ValueError, match="signal shape"):
        mod.signal(np.random.default_rng(0), 10, "wide")
