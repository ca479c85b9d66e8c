"""ROC / SIC / rejection on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowctl.metrics.sic import (
    FPR_FLOOR,
    anomaly_metrics,
    auc,
    max_sic,
    rejection_at,
    rejection_band,
    roc_curve,
    roc_pairs,
    sic_band,
    sic_curve,
)


def test_roc_small_with_ties() -> None:
    y = np.array([1, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.1, 0.1])
    fpr, tpr, thr = roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    assert thr[0] == np.inf and list(thr[1:]) == [0.9, 0.8, 0.3, 0.1]
    # Mann-Whitney by hand: pairs (s, b) with s > b count 1, ties 1/2 -> (3 + 2.5 + 0.5) / 9
    assert auc(y, s) == pytest.approx(6 / 9)
    sic, f, t, _ = sic_curve(y, s)
    assert (f > 0).all()
    np.testing.assert_allclose(sic, t / np.sqrt(f))
    assert max_sic(y, s, fpr_floor=0.0)[0] == pytest.approx((2 / 3) / math.sqrt(1 / 3))


def test_perfect_random_and_rejection() -> None:
    y = np.r_[np.zeros(1000), np.ones(1000)]
    assert auc(y, y) == 1.0
    rng = np.random.default_rng(0)
    s = rng.random(2000)
    assert abs(auc(y, s) - 0.5) < 0.05
    # score = rank: background 0..999, signal 500..1499 -> at TPR 0.2 the cut keeps
    # signal >= 1300.5 and no background: rejection inf
    sc = np.r_[np.arange(1000), np.arange(500, 1500) + 0.5]
    assert rejection_at(y, sc, 0.2) == np.inf
    assert rejection_at(y, sc, 1.0) == pytest.approx(1000 / 499)   # bkg 501..999 pass
    # Gaussian scores: signal N(1, 1) vs background N(0, 1); FPR at TPR 0.5 is Phi(-1)
    bkg = rng.standard_normal(200_000)
    sig = 1.0 + rng.standard_normal(200_000)
    y2 = np.r_[np.zeros(bkg.size), np.ones(sig.size)]
    s2 = np.r_[bkg, sig]
    assert rejection_at(y2, s2, 0.5) == pytest.approx(1 / 0.158655, rel=0.02)
    assert auc(y2, s2) == pytest.approx(0.760250, abs=0.003)   # Phi(1/sqrt 2)
    m = anomaly_metrics(y2, s2)
    assert set(m) >= {"auc", "max_sic", "rejection_tpr0.2", "rejection_tpr0.5"}
    assert m["max_sic_fpr"] >= FPR_FLOOR and m["max_sic"] > 1.0


def test_fpr_floor() -> None:
    # one lone background event above all signal: the SIC it gives at FPR 1e-5 is ignored
    y = np.r_[np.zeros(100_000), np.ones(100)]
    s = np.r_[np.zeros(100_000), np.ones(100)]
    s[0] = 2.0
    assert max_sic(y, s, fpr_floor=0.0)[0] == pytest.approx(1.0 / math.sqrt(1e-5))
    assert max_sic(y, s) == pytest.approx((1.0, 1.0, 1.0))


def test_sic_band_and_errors() -> None:
    rng = np.random.default_rng(2)
    curves = []
    for _ in range(5):
        y = np.r_[np.zeros(5000), np.ones(5000)]
        s = np.r_[rng.standard_normal(5000), 1.0 + rng.standard_normal(5000)]
        f, t, _ = roc_curve(y, s)
        curves.append((f, t))
    grid, med, lo, hi = sic_band(curves, n_grid=100, min_runs=5)
    assert grid.shape == med.shape == (100,)
    ok = np.isfinite(med)
    assert ok[20:].all() and (lo[ok] <= med[ok]).all() and (med[ok] <= hi[ok]).all()
    assert med[49] == pytest.approx(0.5 / math.sqrt(0.158655), rel=0.1)
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(np.zeros(3), np.arange(3))
    with pytest.raises(ValueError, match="differ in length"):
        roc_curve(np.zeros(3), np.arange(4))
    with pytest.raises(ValueError, match="NaN"):
        roc_curve(np.array([0, 1]), np.array([0.0, np.nan]))


def test_rejection_band_and_roc_pairs() -> None:
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(5):
        y = np.r_[np.zeros(20000), np.ones(20000)]
        pairs.append((y, np.r_[rng.standard_normal(20000), 1.0 + rng.standard_normal(20000)]))
    rocs = roc_pairs(pairs)
    assert len(rocs) == 5
    f0, t0, _ = roc_curve(*pairs[0])
    np.testing.assert_array_equal(rocs[0][0], f0)
    np.testing.assert_array_equal(rocs[0][1], t0)
    for kind in ("auto", "roc"):                                  # (fpr, tpr) pass through
        np.testing.assert_array_equal(roc_pairs(rocs, kind=kind)[1][0], rocs[1][0])
    grid, med, lo, hi = rejection_band(rocs, n_grid=100, min_runs=5)
    ok = np.isfinite(med)
    assert ok[5:].all() and (lo[ok] <= med[ok]).all() and (med[ok] <= hi[ok]).all()
    # N(1, 1) vs N(0, 1): at TPR 0.5 the FPR is Phi(-1) = 0.158655
    assert med[49] == pytest.approx(1 / 0.158655, rel=0.03)
    # one run: rejection = (SIC / TPR)^2 on the same grid, capped by the FPR floor
    _, sic1, _, _ = sic_band(rocs[:1], n_grid=100, fpr_floor=1e-3)
    _, rej1, _, _ = rejection_band(rocs[:1], n_grid=100, fpr_floor=1e-3)
    np.testing.assert_allclose(rej1, (sic1 / grid) ** 2, rtol=1e-9)
    assert np.nanmax(rej1) <= 1e3
    with pytest.raises(ValueError, match="kind"):
        roc_pairs(rocs, kind="bad")
    with pytest.raises(ValueError, match="at least one"):
        rejection_band([])
