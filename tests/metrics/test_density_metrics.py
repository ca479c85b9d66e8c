"""Density metrics: standard errors and the Monte-Carlo KL estimate."""

from __future__ import annotations

import numpy as np
import pytest

from flowctl.metrics import kl_divergence, mean_and_se, nll


def test_mean_and_se() -> None:
    m, se = mean_and_se(np.array([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert nll(np.array([-1.0, -3.0]))[0] == 2.0
    with pytest.raises(ValueError):
        mean_and_se(np.array([]))


def test_kl_between_gaussians_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, 200000)
    mu, s = 0.5, 1.3

    def logn(v: np.ndarray, m: float, sd: float) -> np.ndarray:
        return -0.5 * ((v - m) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)

    kl, se = kl_divergence(logn(x, 0, 1), logn(x, mu, s))
    exact = np.log(s) + (1 + mu**2) / (2 * s**2) - 0.5
    assert abs(kl - exact) < 4 * se and se < 0.01
    assert kl_divergence(logn(x, 0, 1), logn(x, 0, 1)) == (0.0, 0.0)
    with pytest.raises(ValueError):
        kl_divergence(np.zeros(3), np.zeros(4))
