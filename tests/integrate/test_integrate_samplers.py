"""The VEGAS grid under a flow, multi-channel mixtures and annealing."""

from __future__ import annotations

import math

import pytest
import torch

from flowctl.apps.integration import DEFAULTS, flow_spec
from flowctl.flows import build as build_flow
from flowctl.integrands import SHIPPED
from flowctl.integration import GridFlow, GridMap, Mixture, adapt_grid, flow_weights, train_nis
from flowctl.integration.trainer import beta_at
from flowctl.metrics.integration import estimate


def test_grid_map_is_a_bijection_with_its_log_det() -> None:
    g = GridMap(3, 8)
    e = torch.rand(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g.edges[:, 1:-1] = e.sort(1).values
    y = torch.rand(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, lj = g(y)
    y2, lji = g.inverse(x)
    assert torch.allclose(y, y2, atol=1e-10) and torch.allclose(lj, -lji)
    # log J against a numerical Jacobian (the map is separable: product of d x_i / d y_i)
    eps = 1e-7
    num = sum(torch.log((g(y + eps * torch.eye(3, dtype=torch.float64)[i])[0][:, i]
                         - x[:, i]) / eps) for i in range(3))
    inside = ((y * 8) % 1 > 1e-5).all(1) & ((y * 8) % 1 < 1 - 1e-5).all(1)
    assert torch.allclose(lj[inside], num[inside], atol=1e-4)


def test_adapted_grid_follows_a_narrow_peak() -> None:
    ig = SHIPPED["gauss"](2, alpha=0.05)
    grid, used = adapt_grid(ig, 2, 20000, bins=32, iterations=5)
    assert used == 20000
    widths = grid.edges.diff(dim=1)
    mid = widths[:, 14:18].mean()  # increments near x = 1/2 are narrow, the edges wide
    assert mid < 0.2 / 32 and widths[:, 0].mean() > 2 / 32
    # the grid alone is a far better sampler than uniform points
    x, lj = grid(torch.rand(20000, 2, dtype=torch.float64))
    e = estimate((ig(x) * torch.exp(lj)).numpy())
    assert e.rel_std < 0.5 and abs(e.integral - ig.exact) < 4 * e.error


def test_mixture_density_is_normalised_and_sampled() -> None:
    torch.manual_seed(0)
    flows = [build_flow(flow_spec({"flow": {"hidden": [8], "bins": 4}}, 2)) for _ in range(2)]
    g = GridMap(2, 4)
    g.edges[:, 1:-1] = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.6, 0.9]], dtype=torch.float64)
    mix = Mixture([flows[0], GridFlow(flows[1], g)], [0.3, 0.7])
    u = torch.rand(50000, 2, dtype=torch.float64)
    with torch.no_grad():
        assert float(mix.log_prob(u).exp().mean()) == pytest.approx(1.0, abs=0.03)
    x, lq = mix.sample_and_log_prob(1000)
    assert x.shape == (1000, 2) and torch.allclose(lq, mix.log_prob(x))


def test_channels_find_both_camel_peaks() -> None:
    """Multi-channel training on the 6-d camel: one channel per peak, both found."""
    ig = SHIPPED["camel"](6)
    tr = {**DEFAULTS["trainer"], "calls": 4000, "batch": 500, "buffer": 6000,
          "buffered_steps": 2, "lr": 3e-3, "loss": "variance"}
    torch.manual_seed(0)
    rep = train_nis(lambda: build_flow(flow_spec({"flow": {"hidden": [16], "bins": 8}}, 6)),
                    ig, 6, tr, integrand=ig, verbose=False)
    assert rep.channels == 2 and rep.calls == 4000
    assert rep.channel_alpha == pytest.approx([0.5, 0.5], abs=0.15)
    torch.manual_seed(1)
    w, x = flow_weights(rep.sampler, ig, 10000, keep_x=True)
    from flowctl.metrics.integration import mode_census

    assert mode_census(x, w, ig.modes, ig.mode_width).all_found
    e = estimate(w)
    assert abs(e.integral - ig.exact) < 4 * e.error


def test_annealing_schedule() -> None:
    tr = {"anneal": 0.5, "anneal_beta0": 0.01}
    assert beta_at(0, 100, tr) == pytest.approx(0.01)
    assert beta_at(25, 100, tr) == pytest.approx(0.1)
    assert beta_at(50, 100, tr) == 1.0 and beta_at(99, 100, tr) == 1.0
    assert beta_at(0, 100, {"anneal": 0.0}) == 1.0
    assert math.isclose(beta_at(10, 100, {"anneal": 1.0, "anneal_beta0": 0.5}), 0.5**0.9)


def test_plain_mc_points_belong_to_their_weights() -> None:
    """keep_x returns the uniform points the weights were computed on, across batches, and
    the same weights as without it (evaluate's plain-MC reference plots them together)."""
    import numpy as np

    from flowctl.integration.sampling import plain_mc

    def f(u: torch.Tensor) -> torch.Tensor:
        return u[:, 0] * torch.exp(u[:, 1])

    w, x = plain_mc(f, 2, 2500, seed=3, batch=1000, keep_x=True)
    assert x.shape == (2500, 2) and ((x >= 0) & (x <= 1)).all()
    np.testing.assert_allclose(w, x[:, 0] * np.exp(x[:, 1]))
    np.testing.assert_array_equal(w, plain_mc(f, 2, 2500, seed=3, batch=1000))
