"""C2ST and TARP (flowctl/metrics/c2st.py, tarp.py) and the benchmark simulators' references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowctl.metrics.c2st import C2STConfig, c2st, c2st_folds, c2st_many
from flowctl.metrics.tarp import tarp
from flowctl.simulators import SLCP, LinearGaussian, SimulatorError, TwoMoons, make_simulator
from flowctl.simulators.truncation import TruncationError, hdr_threshold, sample_truncated


def test_c2st_identical_half_disjoint_one() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 2)), rng.normal(size=(600, 2))
    # identical, partly shifted and disjoint pairs, trained together as one batched model
    acc = c2st_many([(a, b), (a, b + 1.0), (a, b + np.array([8.0, 0.0]))],
                    C2STConfig(max_epochs=60))
    assert acc.shape == (3, 5)
    same, part, apart = acc.mean(1)
    assert abs(same - 0.5) < 0.06 and apart > 0.98 and 0.6 < part < 0.85
    np.testing.assert_allclose(c2st_folds(a[:50], b[:50] + 8.0, C2STConfig(folds=2)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        c2st(a, np.full((600, 2), np.nan))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        c2st(a, rng.normal(size=(600, 3)))


def test_tarp_calibrated_and_overconfident() -> None:
    """Exact Gaussian posterior draws: ECP on the diagonal; squeezed draws fall off it."""
    rng = np.random.default_rng(1)
    m, n = 800, 200
    mu = rng.normal(size=(m, 1, 3))
    theta = mu[:, 0] + rng.normal(size=(m, 3))
    res = tarp(theta, mu + rng.normal(size=(m, n, 3)), rng=rng)
    assert res["max_deviation"] < 0.08 and abs(res["atc"]) < 0.03 and res["ks_pvalue"] > 1e-3
    assert abs(res["at"]["68"]["ecp"] - 0.68) < 4 * res["at"]["68"]["error"] + 0.01
    narrow = tarp(theta, mu + 0.4 * rng.normal(size=(m, n, 3)), rng=rng)
    wide = tarp(theta, mu + 2.5 * rng.normal(size=(m, n, 3)), rng=rng)
    assert narrow["max_deviation"] > 0.15 and narrow["ks_pvalue"] < 1e-6
    assert wide["max_deviation"] > 0.15
    assert np.all(np.diff(res["ecp"]) >= 0) and res["ecp"][0] == 0.0


def test_two_moons_reference_is_the_exact_posterior() -> None:
    """Reference draws against the posterior ∝ likelihood on a fine grid of the prior box."""
    sim = TwoMoons()
    rng = np.random.default_rng(2)
    x = np.array([0.1, -0.15])  # a point with both crescents inside the box
    ref = sim.sample_reference(x, 100_000, rng)
    assert ref.shape == (100_000, 2) and np.abs(ref).max() <= 1.0
    g = np.linspace(-1, 1, 601)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    s = math.sqrt(2.0)
    q = x - np.stack([-np.abs(grid.sum(1)) / s, (grid[:, 1] - grid[:, 0]) / s], 1) - [0.25, 0]
    r = np.hypot(q[:, 0], q[:, 1])
    w = np.where(q[:, 0] > 0, np.exp(-0.5 * ((r - 0.1) / 0.01) ** 2) / r, 0.0)
    w /= w.sum()
    mean = (grid * w[:, None]).sum(0)
    std = np.sqrt((grid**2 * w[:, None]).sum(0) - mean**2)
    np.testing.assert_allclose(ref.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(ref.std(0), std, rtol=0.02)
    # both modes (sign of θ₁ + θ₂) carry mass as on the grid
    up = (w * (grid.sum(1) > 0)).sum()
    assert abs((ref.sum(1) > 0).mean() - up) < 0.01


def test_slcp_likelihood_matches_its_simulator() -> None:
    sim = SLCP()
    rng = np.random.default_rng(3)
    theta = np.array([[0.5, -1.0, 1.2, -0.8, 0.7]])
    x = sim.simulate(np.repeat(theta, 20000, 0), rng).reshape(-1, 4, 2).reshape(-1, 2)
    s1, s2, rho = 1.2**2, 0.8**2, math.tanh(0.7)
    cov = np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])
    np.testing.assert_allclose(x.mean(0), [0.5, -1.0], atol=0.03)
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.03, atol=0.01)
    pts = rng.normal(size=(8,))
    d = pts.reshape(4, 2) - [0.5, -1.0]
    sol = np.linalg.solve(cov, d.T).T
    want = -0.5 * ((d * sol).sum() + 4 * (np.linalg.slogdet(cov)[1] + 2 * math.log(2 * math.pi)))
    assert sim.log_likelihood(theta, pts)[0] == pytest.approx(want, rel=1e-10)
    assert sim.prior_bounds is not None and sim.x_dim == 8 and sim.has_reference


def test_benchmark_gaussian_linear_and_separable_sims() -> None:
    sim = make_simulator({"kind": "linear_gaussian", "params": {
        "theta_dim": 10, "x_dim": 10, "prior_std": math.sqrt(0.1), "noise_std": math.sqrt(0.1),
        "matrix": "identity"}})
    np.testing.assert_allclose(sim.cov, 0.05 * np.eye(10))
    assert sim.separable and sim.has_reference and not make_simulator(
        {"target": "tests.posterior.usersim_posterior:shifted"}).separable
    with pytest.raises(SimulatorError, match="identity"):
        LinearGaussian(theta_dim=2, x_dim=3, matrix="identity")


def test_truncated_prior_sampling() -> None:
    rng = np.random.default_rng(4)
    lq = rng.normal(size=100_000)
    assert hdr_threshold(lq, 0.1) == pytest.approx(-1.2816, abs=0.03)

    def log_q(t: np.ndarray) -> np.ndarray:
        return -0.5 * (t**2).sum(1)

    th, info = sample_truncated(2000, lambda k: rng.uniform(-2, 2, (k, 2)), log_q, -0.5,
                                batch=5000)
    assert th.shape == (2000, 2) and (np.hypot(*th.T) <= 1.0 + 1e-12).all()
    assert info["acceptance"] == pytest.approx(math.pi / 16, rel=0.1)
    with pytest.raises(TruncationError, match="acceptance"):
        sample_truncated(10, lambda k: rng.uniform(-2, 2, (k, 2)), log_q, 1.0, batch=1000,
                         max_draws=5000)
