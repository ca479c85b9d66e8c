"""The Hough line search and the CATHODE scoring of one Gaia window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowctl.anomaly.hough import hough_counts, line_search
from flowctl.apps.common import build_flow
from flowctl.apps.gaia import _cathode_window
from flowctl.metrics.sic import auc


def _disk(rng: np.random.Generator, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    rad, a = r * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    return rad * np.cos(a), rad * np.sin(a)


def test_hough_counts_by_hand() -> None:
    # three stars on the line lam = 1 (theta = 90 deg, rho = 1), one far from it
    counts, th, rho = hough_counts(np.array([-3.0, 0.0, 4.0, 0.0]),
                                   np.array([1.0, 1.0, 1.0, -5.0]), 10.0, 0.5, 4)
    i, j = int(np.flatnonzero(np.isclose(th, np.pi / 2))[0]), int(np.argmin(abs(rho - 1)))
    assert counts[i, j] == 3 and counts.max() == 3
    assert counts.sum(axis=1).max() <= 2 * 4          # each star votes for <= 2 offsets


def test_line_search_finds_a_track_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    t = rng.uniform(-10, 10, 30)                       # 30 stars on lam = 0.3 phi + 2
    phi = np.r_[t, _disk(rng, 70, 15.0)[0]]
    lam = np.r_[0.3 * t + 2 + 0.08 * rng.standard_normal(30), _disk(rng, 70, 15.0)[1]]
    f = line_search(phi, lam, 15.0, 0.5, n_null=50)
    assert f.members[:30].sum() >= 27 and f.members[30:].sum() <= 3
    assert f.z > 10 and f.p == pytest.approx(1 / 51)
    slope = -1 / np.tan(f.theta)
    assert slope == pytest.approx(0.3, abs=0.05)
    g = line_search(*_disk(rng, 100, 15.0), 15.0, 0.5, n_null=50, seed=1)
    assert g.z < 3 and g.p > 0.01                      # uniform stars: no track


def test_cathode_window_scores_an_overdensity_out_of_fold() -> None:
    """An untrained flow whose preprocessing is fitted on the background stands in for the
    sideband model; SR stars = background + a tight cluster. The out-of-fold log-odds rank
    the cluster first."""
    rng = np.random.default_rng(1)
    bkg = rng.standard_normal((1000, 3))
    sig = np.array([2.0, -1.5, 1.0]) + 0.1 * rng.standard_normal((50, 3))
    x = np.r_[bkg, sig]
    ctx = rng.uniform(-0.3, 0.3, (len(x), 1)).astype(np.float32)
    spec = {"kind": "maf", "features": 3, "context": 1, "transforms": 2, "hidden": [8],
            "transform": "affine", "preprocessing": [{"kind": "standardize"}]}
    torch.manual_seed(0)
    flow = build_flow(spec)
    flow.initialize(torch.as_tensor(bkg, dtype=torch.float32), torch.as_tensor(ctx[:1000]))
    cfg = {"flow": spec, "cathode": {"k": 3, "oversample": 2.0},
           "classifier": {"layers": [32, 32], "epochs": 6, "top_k": 2, "batch_size": 128,
                          "lr": 3e-3}}
    info, s = _cathode_window(cfg, flow.state_dict(), x, ctx, seed=0)
    s = s.numpy()
    assert s.shape == (len(x),) and np.isfinite(s).all() and info["k"] == 3
    assert info["n_samples"] > 1500
    assert auc(np.r_[np.zeros(1000), np.ones(50)], s) > 0.9


def test_smooth_scores_lifts_a_cluster_over_chance_highs() -> None:
    from flowctl.apps.gaia import smooth_scores

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3000, 3))
    x[:30] = 0.3 + 0.01 * rng.standard_normal((30, 3))          # a tight cluster
    s = rng.standard_normal(3000)
    s[:30] += 1.5                                                # mildly higher scores
    s[-5:] = -np.inf                                             # unscored stars
    top_raw = np.argsort(-s)[:30]
    sm = smooth_scores(s, x, 10)
    top_sm = np.argsort(-sm)[:30]
    assert np.isneginf(sm[-5:]).all() and np.isfinite(sm[:-5]).all()
    assert (top_sm < 30).sum() >= 2 * max((top_raw < 30).sum(), 5)
    assert np.array_equal(smooth_scores(s, x, 1), s)             # k <= 1: unchanged
    # the smoothed score of an isolated star is the mean of its neighbourhood, never a copy
    assert sm[:-5].std() < s[:-5].std()
