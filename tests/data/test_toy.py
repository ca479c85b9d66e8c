"""Toy densities: exact log-densities integrate to one; samples follow them."""

from __future__ import annotations

import numpy as np
import pytest

from flowctl.data.toy import Checkerboard, GaussianMixture, Ring, make_gmm, make_toy


def _grid_integral(log_prob, lo: float, hi: float, n: int = 600) -> float:
    xs = np.linspace(lo, hi, n)
    xx, yy = np.meshgrid(xs, xs)
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    dx = xs[1] - xs[0]
    return float(np.exp(log_prob(pts)).sum() * dx * dx)


def test_ring_normalised_and_shape() -> None:
    ring = Ring()
    assert ring.dim == 2 and ring.exact
    assert _grid_integral(ring.log_prob, -4, 4) == pytest.approx(1.0, abs=2e-3)
    x = ring.sample(20000, np.random.default_rng(0))
    r = np.linalg.norm(x, axis=1)
    assert abs(r.mean() - 2.0) < 0.05
    # the log-density at the samples matches the analytic entropy estimate roughly
    assert np.isfinite(ring.log_prob(x)).all()


def test_checkerboard_normalised_and_support() -> None:
    cb = Checkerboard()
    assert _grid_integral(cb.log_prob, -2.5, 2.5, 1001) == pytest.approx(1.0, abs=1e-2)
    x = cb.sample(5000, np.random.default_rng(1))
    assert np.isfinite(cb.log_prob(x)).all()
    assert np.allclose(cb.log_prob(x), -np.log(8.0))
    assert cb.log_prob(np.array([[0.5, -0.5], [3.0, 3.0]])).tolist() == [-np.inf, -np.inf]


def test_gmm_matches_reference_in_1d_and_integrates() -> None:
    g = GaussianMixture(means=[[0.0], [3.0]], scales=[[1.0], [0.5]], weights=[0.25, 0.75])
    x = np.array([[0.3], [2.0]])
    ref = np.log(0.25 * np.exp(-0.5 * x[:, 0] ** 2) / np.sqrt(2 * np.pi)
                 + 0.75 * np.exp(-0.5 * ((x[:, 0] - 3) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi)))
    assert np.allclose(g.log_prob(x), ref)
    g2 = make_gmm(dim=2, components=3, spread=1.0, seed=3)
    assert _grid_integral(g2.log_prob, -7, 7) == pytest.approx(1.0, abs=2e-3)
    x = make_gmm(dim=5).sample(100, np.random.default_rng(0))
    assert x.shape == (100, 5)


def test_sample_mean_log_prob_matches_grid_entropy() -> None:
    ring = Ring()
    x = ring.sample(50000, np.random.default_rng(2))
    mc = -ring.log_prob(x).mean()
    xs = np.linspace(-4, 4, 600)
    xx, yy = np.meshgrid(xs, xs)
    lp = ring.log_prob(np.stack([xx.ravel(), yy.ravel()], 1))
    grid = -(np.exp(lp) * lp).sum() * (xs[1] - xs[0]) ** 2
    assert mc == pytest.approx(grid, abs=0.02)


def test_moons_and_factory() -> None:
    m = make_toy("moons")
    assert m.sample(10, np.random.default_rng(0)).shape == (10, 2) and not m.exact
    with pytest.raises(NotImplementedError):
        m.log_prob(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="available"):
        make_toy("spiral")
