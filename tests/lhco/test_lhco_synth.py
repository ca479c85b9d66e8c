"""Synthetic LHCO-like generator: format, background/signal statistics, shifted variant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowctl.data.lhco import load_lhco, read_lhco_raw, signal_region_mask
from flowctl.data.synth.lhco import FILES, background, signal, write_all

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("lhco"), 40_000, signal_fraction=0.05, seed=3)


def test_format_and_injection(files: dict[str, Path]) -> None:
    raw = read_lhco_raw(files["data"])
    assert raw.shape == (42_000, 15)
    lab = raw[:, -1]
    assert lab.sum() == 2000 and np.all(np.diff(lab) >= 0)   # label-sorted like the real file
    extra = load_lhco(files["extra_bkg"])
    assert extra.shape == (12_000, 6) and signal_region_mask(extra[:, 0]).all()
    assert (extra[:, 5] == 0).all()
    assert (load_lhco(files["extra_sig"])[:, 5] == 1).all()
    assert {p.name for p in files.values()} == set(FILES.values())


def test_statistics() -> None:
    rng = np.random.default_rng(0)
    from flowctl.data.lhco import cathode_features
    b = cathode_features(background(rng, 100_000))
    s = cathode_features(signal(rng, 20_000))
    # falling mjj spectrum above the turn-on
    h, _ = np.histogram(b[:, 0], bins=np.arange(2.8, 5.01, 0.2))
    assert np.all(np.diff(h) < 0)
    # signal: mjj near 3.5 TeV (~75 % in the SR), jets near 100 / 500 GeV, two-prong tau21
    assert 0.65 < signal_region_mask(s[:, 0]).mean() < 0.85
    assert abs(np.median(s[:, 1]) - 0.100) < 0.01
    assert abs(np.median(s[:, 1] + s[:, 2]) - 0.500) < 0.03
    assert np.median(s[:, 3]) < 0.4 and np.median(s[:, 4]) < 0.4
    assert np.median(b[:, 3]) > 0.6 and np.median(b[:, 4]) > 0.6
    # background features correlated with mjj: heavier, lower tau21 at high mjj
    lo, hi = b[:, 0] < 3.0, b[:, 0] > 4.0
    assert np.median(b[hi, 1]) > 1.5 * np.median(b[lo, 1])
    assert np.median(b[hi, 3]) < np.median(b[lo, 3])


def test_shifted_variant(tmp_path: Path) -> None:
    a = load_lhco(write_all(tmp_path / "a", 5000, 0.01, seed=1)["data"])
    b = load_lhco(write_all(tmp_path / "b", 5000, 0.01, seed=1, shift=0.1)["data"])
    np.testing.assert_allclose(a[:, 0], b[:, 0], rtol=1e-9)   # same events, same mjj
    d = (b[:, 1] - a[:, 1]) - 0.1 * a[:, 0]
    assert np.median(np.abs(d)) < 1e-9
    ca = np.corrcoef(a[:, 0], a[:, 1])[0, 1]
    cb = np.corrcoef(b[:, 0], b[:, 1])[0, 1]
    assert cb > ca + 0.2


def test_module_entry_point(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "flowctl.data.synth.lhco", "--out",
                          str(tmp_path), "--n", "3000", "--signal-fraction", "0.01"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "3030 events (30 signal)" in res.stdout
    assert (tmp_path / FILES["data"]).is_file()


def test_worlds_differ_and_keep_the_format(tmp_path: Path) -> None:
    from flowctl.data.lhco import cathode_features
    from flowctl.data.synth.lhco import WORLDS

    assert set(WORLDS) == {"default", "correlated", "mixture"}
    stats = {}
    for w in WORLDS:
        rng = np.random.default_rng(0)
        b = cathode_features(background(rng, 60_000, world=w))
        s = cathode_features(signal(rng, 20_000, world=w))
        near = (b[:, 0] > 2.7) & (b[:, 0] < 4.3)
        stats[w] = (np.corrcoef(b[near, 0], b[near, 1])[0, 1], np.median(s[:, 1]),
                    np.median(s[:, 1] + s[:, 2]), signal_region_mask(s[:, 0]).mean())
        assert np.median(s[:, 3]) < np.median(b[:, 3])          # two-prong-ish signal
    # correlated: jet mass follows mjj much more strongly; heavier jets 450 / 150 GeV
    assert stats["correlated"][0] > stats["default"][0] + 0.15
    assert abs(stats["correlated"][1] - 0.150) < 0.02
    assert abs(stats["correlated"][2] - 0.450) < 0.05
    assert 0.5 < stats["correlated"][3] < 0.75
    assert abs(stats["mixture"][1] - 0.080) < 0.015
    # same format; the SR-only extra background stays in the SR in every world
    f = write_all(tmp_path, 4000, 0.01, seed=2, world="correlated")
    assert read_lhco_raw(f["data"]).shape == (4040, 15)
    assert signal_region_mask(load_lhco(f["extra_bkg"])[:, 0]).all()
    with pytest.raises(ValueError, match="world must be one of"):
        write_all(tmp_path, 100, world="nope")
