"""Simulators (analytic posterior, two moons, user targets) and the calibration metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowctl.apps.posterior import calibration
from flowctl.simulators import LinearGaussian, SimulatorError, TwoMoons, make_simulator


def test_linear_gaussian_posterior_is_bayes() -> None:
    """log p(θ|x) = log p(θ) + log p(x|θ) − log p(x), all Gaussians in closed form."""
    sim = LinearGaussian(theta_dim=2, x_dim=3, prior_std=1.3, noise_std=0.4, seed=3)
    rng = np.random.default_rng(0)
    th, x = sim.sample_joint(5, rng)
    th2 = rng.normal(size=th.shape)  # any θ, not only the generating one

    def lognorm(v: np.ndarray, cov: np.ndarray) -> np.ndarray:
        sol = np.linalg.solve(cov, v.T).T
        return -0.5 * ((v * sol).sum(1) + np.linalg.slogdet(cov)[1]
                       + v.shape[1] * math.log(2 * math.pi))

    prior = lognorm(th2, 1.3**2 * np.eye(2))
    lik = lognorm(x - th2 @ sim.A.T, 0.4**2 * np.eye(3))
    ev = lognorm(x, 1.3**2 * sim.A @ sim.A.T + 0.4**2 * np.eye(3))
    np.testing.assert_allclose(sim.log_posterior(th2, x), prior + lik - ev, rtol=1e-10)


def test_two_moons_shapes_and_prior() -> None:
    th, x = TwoMoons().sample_joint(1000, np.random.default_rng(1))
    assert th.shape == (1000, 2) and x.shape == (1000, 2)
    assert np.abs(th).max() <= 1.0 and not TwoMoons().exact
    # the ring radius about the moon centre is r ~ N(0.1, 0.01)
    s = math.sqrt(2.0)
    p = x - np.stack([-np.abs(th.sum(1)) / s, (th[:, 1] - th[:, 0]) / s], 1)
    r = np.hypot(p[:, 0] - 0.25, p[:, 1])
    assert abs(r.mean() - 0.1) < 0.002 and abs(r.std() - 0.01) < 0.002


def test_user_target_and_errors() -> None:
    sim = make_simulator({"kind": "linear_gaussian", "params": {"theta_dim": 4},
                          "target": "tests.posterior.usersim_posterior:shifted"})
    assert (sim.theta_dim, sim.x_dim) == (1, 2)  # the shipped kind's params are not passed
    sim = make_simulator({"target": "tests.posterior.usersim_posterior:shifted",
                          "params": {"scale": 0.1}})
    th, x = sim.sample_joint(500, np.random.default_rng(0))
    assert np.std(x - th) == pytest.approx(0.1, rel=0.1)
    with pytest.raises(SimulatorError, match="return"):
        make_simulator({"target": "tests.posterior.usersim_posterior:broken"})
    with pytest.raises(SimulatorError, match="cannot import"):
        make_simulator({"target": "no_such_module_xyz:f"})
    with pytest.raises(SimulatorError, match="unknown simulator.kind"):
        make_simulator({"kind": "spiral"})
    with pytest.raises(SimulatorError, match="unknown noise"):
        make_simulator({"kind": "linear_gaussian", "params": {"noise": 1.0}})


def test_calibration_of_the_exact_posterior_is_nominal() -> None:
    """Exact posterior draws: uniform SBC ranks and coverage at nominal (within 3σ)."""
    sim = LinearGaussian()
    rng = np.random.default_rng(2)
    th, x = sim.sample_joint(1500, rng)
    draws = np.stack([sim.sample_posterior(xi, 100, rng) for xi in x])      # [M, L, P]
    lq = sim.log_posterior(draws.reshape(-1, 2), np.repeat(x, 100, 0)).reshape(1500, 100)
    cal = calibration(th, draws, sim.log_posterior(th, x), lq, bins=10)
    assert cal["ranks"].shape == (1500, 2) and cal["rank_hist"].sum() == 3000
    for v in cal["coverage"].values():
        assert abs(v["coverage"] - v["nominal"]) < 3 * v["error"] + 0.005
    assert max(cal["rank_chi2_ndf"]) < 3.0
    # an over-confident posterior (draws squeezed to the mean) under-covers
    mu = sim.posterior_mean(x)[:, None, :]
    narrow = mu + 0.5 * (draws - mu)
    cov_n = 0.25 * sim.cov  # the squeezed posterior's own density orders the draws
    d = (narrow - mu).reshape(-1, 2)
    lq_n = -0.5 * (d * np.linalg.solve(cov_n, d.T).T).sum(1).reshape(1500, 100)
    dt = th - mu[:, 0]
    lt = -0.5 * (dt * np.linalg.solve(cov_n, dt.T).T).sum(1)
    bad = calibration(th, narrow, lt, lq_n, bins=10)
    assert bad["coverage"]["68"]["coverage"] < 0.5 and max(bad["rank_chi2_ndf"]) > 3.0
