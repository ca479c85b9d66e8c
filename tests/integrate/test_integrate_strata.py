"""Stratified training batches (trainer.stratify_batches) and the pieces moved out of the
app: the stratified mean, the reliability-section check."""

from __future__ import annotations

import math

import pytest
import torch

from flowctl.flows import build as build_flow
from flowctl.integration import IntegrationError, check_trainer
from flowctl.integration.diagnostics import THRESHOLDS, check_thresholds
from flowctl.integration.strata import stratified_mean, stratified_uniform
from flowctl.integration.trainer import TRAINER_DEFAULTS, train_sampler

SPEC = {"kind": "coupling", "features": 2, "domain": "unit", "mask": "binary",
        "transforms": 2, "hidden": [16], "transform": "rqs", "bins": 8}


def _f(x: torch.Tensor) -> torch.Tensor:  # smooth, integral 1 over [0,1]^2
    return (2 * x.double()).prod(-1)


def test_stratified_mean_matches_the_direct_formula() -> None:
    g = torch.Generator().manual_seed(1)
    z, cube = stratified_uniform(1000, [22, 22], g)
    w = _f(z)
    mean, var = stratified_mean(w, cube, 484)
    per = [w[cube == h] for h in range(484)]
    assert mean == pytest.approx(sum(float(p.mean()) for p in per) / 484, rel=1e-12)
    direct = sum(float(p.var(unbiased=True)) / len(p) for p in per) / 484**2
    assert var == pytest.approx(direct, rel=1e-9)


def _first_batch(stratify: bool, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    flow = build_flow(SPEC)
    tr = {"loss": "variance", "calls": 1000, "batch": 1000, "lr": 1e-3,
          "stratify_batches": stratify}
    return train_sampler(flow, _f, tr, seed=seed, verbose=False).history[0]


def test_stratified_batches_are_unbiased_with_a_smaller_error() -> None:
    # the same untrained flow: stratified latent points remove the between-cube variance
    pulls = []
    for seed in range(3):
        s, i = _first_batch(True, seed), _first_batch(False, seed)
        assert s["error"] < 0.3 * i["error"], (s, i)
        pulls.append((s["estimate"] - 1.0) / s["error"])
    assert max(abs(p) for p in pulls) < 4, pulls
    assert math.isfinite(s["rel_std"]) and s["rel_std"] > 0


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(IntegrationError, match="stratify_batches must be true or false"):
        check_trainer({**TRAINER_DEFAULTS, "stratify_batches": "yes"})
    rel = {**THRESHOLDS, "max_nonfinite": 1e-4}
    check_thresholds(rel)
    with pytest.raises(IntegrationError, match="reliability.k_max must be a number >= 0"):
        check_thresholds({**rel, "k_max": -1})
    with pytest.raises(IntegrationError, match="min_tail_share must be a fraction"):
        check_thresholds({**rel, "min_tail_share": 2})
    with pytest.raises(IntegrationError, match="subbatches must be an integer >= 2"):
        check_thresholds({**rel, "subbatches": 1})
