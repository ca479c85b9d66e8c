"""The stratified estimate in a sampler's latent space (flowctl.integration.stratified)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowctl.flows import build as build_flow
from flowctl.integrands import SHIPPED
from flowctl.integration import GridFlow, Mixture, adapt_grid, fresh_estimate
from flowctl.integration.stratified import (
    can_stratify,
    strata_per_axis,
    stratified_estimate,
    stratified_uniform,
)

SPEC = {"kind": "coupling", "features": 2, "domain": "unit", "mask": "binary",
        "transforms": 2, "hidden": [16], "transform": "rqs", "bins": 8}


def test_strata_per_axis_fill_at_most_half_the_points() -> None:
    assert strata_per_axis(50000, 2) == [158, 158]
    s16 = strata_per_axis(50000, 16)
    assert math.prod(s16) <= 25000 and sorted(s16) == [1, 1] + [2] * 14
    for n, d in ((7, 3), (1000, 5), (10**6, 3)):
        s = strata_per_axis(n, d)
        assert math.prod(s) <= n // 2 and max(s) - min(s) <= 1


def test_stratified_uniform_puts_two_or_more_points_in_each_cube() -> None:
    z, cube = stratified_uniform(1003, [7, 9], torch.Generator().manual_seed(0))
    counts = torch.bincount(cube, minlength=63)
    assert int(counts.min()) >= 2 and int(counts.sum()) == 1003
    assert int(counts.max()) - int(counts.min()) <= 1
    ij = torch.stack([cube // 9, cube % 9], 1).double()
    assert bool(((z * torch.tensor([7.0, 9.0])).floor() == ij).all())
    with pytest.raises(ValueError, match="strata"):
        stratified_uniform(10, [4, 4])


def test_constant_weights_have_no_error_and_smooth_ones_gain() -> None:
    torch.manual_seed(0)
    flow = build_flow(SPEC)  # identity at initialisation: q = 1
    assert can_stratify(flow)
    const = stratified_estimate(flow, lambda x: torch.full((len(x),), 2.5,
                                                           dtype=torch.float64), 2000)
    assert const.integral == pytest.approx(2.5, rel=1e-5) and const.error < 1e-5
    poly = SHIPPED["polynomial"](2)
    s = stratified_estimate(flow, poly, 20000, seed=1)
    assert abs(s.integral - poly.exact) < 4 * s.error
    # a smooth integrand on 100 x 100 cubes: far below the i.i.d. spread of the same points
    assert s.rel_std < 0.05 * s.rel_std_iid
    assert s.weights.shape == (20000,) and s.points.shape == (20000, 2)


@pytest.mark.parametrize("kind", ["grid", "mixture"])
def test_error_matches_the_spread_over_seeds(kind: str) -> None:
    torch.manual_seed(0)
    ig = SHIPPED["camel"](2)
    if kind == "grid":
        grid, _ = adapt_grid(ig, 2, 4000, bins=32, seed=0)
        sampler: torch.nn.Module = GridFlow(build_flow(SPEC), grid)
    else:
        sampler = Mixture([build_flow(SPEC), build_flow(SPEC)], [0.3, 0.7])
    assert can_stratify(sampler)
    runs = [stratified_estimate(sampler, ig, 2000, seed=s) for s in range(30)]
    vals = np.array([r.integral for r in runs])
    err = float(np.sqrt(np.mean([r.error**2 for r in runs])))
    assert abs(vals.mean() - ig.exact) < 4 * err / math.sqrt(len(runs))
    assert 0.6 < vals.std(ddof=1) / err < 1.5


def test_fresh_estimate_iid_and_stratified_fields() -> None:
    torch.manual_seed(0)
    flow = build_flow(SPEC)
    ig = SHIPPED["gauss"](2)
    st, w, x = fresh_estimate(flow, ig, 4000, stratify=True, seed=0)
    iid, w2, _ = fresh_estimate(flow, ig, 4000, stratify=False, seed=0)
    assert st["stratified"] and not iid["stratified"]
    assert iid["rel_std_iid"] == iid["rel_std"]
    assert st["rel_std"] < st["rel_std_iid"]
    assert len(w) == len(w2) == len(x) == 4000 and st["ess_fraction"] > 0
