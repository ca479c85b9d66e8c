"""Estimates, pulls and the bootstrap unweighting efficiency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowctl.metrics.integration import estimate, pull, unweighting_efficiency


def test_estimate() -> None:
    w = np.array([1.0, 3.0, 1.0, 3.0])
    e = estimate(w)
    assert e.integral == 2.0
    assert e.error == pytest.approx(np.std(w, ddof=1) / 2)
    assert e.rel_std == pytest.approx(np.std(w, ddof=1) / 2)
    assert e.ess == pytest.approx(64 / 20)
    assert e.ess_fraction == pytest.approx(0.8)
    assert estimate(np.array([0.0, 2.0, 0.0, 2.0])).nonzero_fraction == 0.5
    # signed weights: the signed mean, ESS with signs
    s = estimate(np.array([1.0, -1.0, 2.0, 2.0]))
    assert s.integral == 1.0


def test_pull() -> None:
    assert pull(1.1, 0.05, 1.0) == pytest.approx(2.0)
    assert pull(1.1, 0.03, 1.0, 0.04) == pytest.approx(2.0)
    assert pull(1.0, 0.1, None) is None


def test_unweighting_constant_and_two_valued() -> None:
    s = unweighting_efficiency(np.full(1000, 2.5), replicas=50)
    assert s.efficiency == pytest.approx(1.0) and s.partial == pytest.approx(1.0)
    assert s.overweight_fraction == 0.0
    w = np.repeat([1.0, 2.0], 5000)
    s = unweighting_efficiency(w, replicas=200)
    assert s.w_max == 2.0
    assert s.efficiency == pytest.approx(0.75, abs=0.01)
    assert s.naive == pytest.approx(0.75)


def test_unweighting_cuts_and_signs() -> None:
    w = np.concatenate([np.zeros(500), np.full(250, 1.0), np.full(250, -1.0)])
    s = unweighting_efficiency(w, replicas=20)
    assert s.cut_efficiency == 0.5
    assert s.efficiency_after_cuts == pytest.approx(1.0)
    assert s.efficiency == pytest.approx(0.5)


def test_unweighting_heavy_tail_below_naive_max_is_robust() -> None:
    rng = np.random.default_rng(0)
    w = rng.exponential(size=20000)
    s = unweighting_efficiency(w, replicas=400, seed=1)
    assert s.replica_size == 400  # i-flow: a pool of 50 replica sizes
    # exponential weights: the median max of n is ln n - ln ln 2; efficiency ~ 1 / that
    assert s.efficiency == pytest.approx(1 / (math.log(400) - math.log(math.log(2))), rel=0.1)
    assert 0 < s.overweight_fraction < 0.01
    # larger replicas -> larger maxima -> lower efficiency
    full = unweighting_efficiency(w, replicas=50, replica_size=len(w))
    assert full.efficiency < s.efficiency and full.w_max <= w.max()
