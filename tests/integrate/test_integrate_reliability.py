"""Diagnostics that flag an untrustworthy error, and non-finite values that are counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowctl.apps.integration import DEFAULTS, flow_spec
from flowctl.flows import build as build_flow
from flowctl.integrands import SHIPPED
from flowctl.integration import (
    NonFinite,
    NonFiniteError,
    diagnose,
    flow_weights,
    pareto_k,
    train_sampler,
)
from flowctl.metrics.integration import estimate


def test_pareto_k_recovers_the_tail_index() -> None:
    rng = np.random.default_rng(0)
    for alpha in (1.25, 2.0, 4.0):  # Pareto tail with index alpha: k = 1/alpha
        k = pareto_k(rng.pareto(alpha, 40000) + 1)
        assert k == pytest.approx(1 / alpha, abs=0.1), alpha
    assert pareto_k(rng.exponential(size=40000)) < 0.2
    assert pareto_k(rng.uniform(size=40000)) < 0
    assert np.isnan(pareto_k(np.ones(10)))


def test_diagnose_heavy_tail_and_light_tail() -> None:
    rng = np.random.default_rng(1)
    heavy = diagnose(rng.pareto(1.1, 40000) + 1)  # infinite variance
    assert not heavy.reliable and any("Pareto k" in r for r in heavy.reasons)
    assert "UNRELIABLE" in heavy.summary() and heavy.as_dict()["reason"]
    light = diagnose(rng.exponential(size=40000))
    assert light.reliable and light.reasons == [] and light.as_dict()["reason"] is None
    assert light.ess_fraction == pytest.approx(0.5, abs=0.02)
    assert light.error_of_error < 0.2 and light.max_weight_share < 1e-3
    assert heavy.tail_variance_share > 0.9  # an infinite-variance tail carries the variance
    assert light.tail_variance_share < 0.4
    few = diagnose(np.r_[np.zeros(5000), 1.0, 2.0, 3.0])  # three points carry everything
    assert not few.reliable and any("ESS" in r for r in few.reasons)
    assert diagnose(np.ones(100), extra=["missed peak(s) [2]"]).reasons == ["missed peak(s) [2]"]


def test_steep_top_of_nearly_constant_weights_is_no_heavy_tail() -> None:
    """The false alarm of e+e- -> q qbar g at 1.5M calls (ESS/N 0.9998, max w / mean w 1.4,
    Pareto k 0.75-0.82): weights within 3 % of their mean, plus a bounded top whose
    exceedances look steep on their own scale. k > 0.7, but the top carries ~15 % of the
    variance: not flagged. A heavy component that does carry the variance still is."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        w = 1 + 0.03 * rng.standard_normal(50000)
        w[:700] = 1.08 + np.minimum(0.002 * rng.pareto(1.0, 700), 0.4)
        d = diagnose(w)
        assert d.pareto_k > 0.7 and d.ess_fraction > 0.99, d  # the old check's false alarm
        assert d.tail_variance_share < 0.3 and d.reliable and not d.reasons, d
        strict = diagnose(w, min_tail_share=0.0)  # k alone, as before the guard
        assert not strict.reliable and "Pareto k" in strict.reasons[0]
        # the same bulk with 1 % of its points from an infinite-variance tail
        w[:500] = 1 + rng.pareto(1.2, 500)
        d = diagnose(w)
        assert d.pareto_k > 0.7 and d.tail_variance_share > 0.9, d
        assert not d.reliable and any("Pareto k" in r for r in d.reasons), d


def _trained(name: str, dim: int, calls: int, seed: int = 0, **params: object
             ) -> tuple[np.ndarray, float]:
    ig = SHIPPED[name](dim, **params)
    torch.manual_seed(seed)
    flow = build_flow(flow_spec({"flow": {"hidden": [16, 16], "bins": 8}}, dim))
    tr = {**DEFAULTS["trainer"], "calls": calls, "batch": 500, "buffer": calls,
          "buffered_steps": 2, "lr": 3e-3, "loss": "variance"}
    train_sampler(flow, ig, tr, seed=seed, verbose=False)
    torch.manual_seed(seed + 1)
    w, _ = flow_weights(flow, ig, 20000)
    return w, float(ig.exact)


def test_flags_an_underconverged_hard_target_and_stays_quiet_on_an_easy_one() -> None:
    """A very narrow, strongly correlated ridge after a short training: the estimate is off
    by many of its own errors and the diagnostics say so; a 2-d camel is fine and not
    flagged."""
    w, exact = _trained("ridge", 6, 3000, width=0.005, length=0.12)
    e = estimate(w)
    d = diagnose(w)
    assert not d.reliable and d.reasons, d
    assert d.tail_variance_share > 0.9, d  # the guard on Pareto k does not hide it
    assert abs(e.integral - exact) > 3 * e.error or d.ess < 100  # the error is not honest
    for seed in (0, 1):
        w, exact = _trained("camel", 2, 3000, seed=seed)
        d = diagnose(w)
        assert d.reliable, (seed, d)
        e = estimate(w)
        assert abs(e.integral - exact) < 4 * e.error


def test_nonfinite_counter_counts_cleans_and_stops() -> None:
    c = NonFinite(max_fraction=0.01)
    y = c.clean(torch.tensor([1.0, float("nan"), float("inf"), -float("inf")] + [1.0] * 996))
    assert torch.isfinite(y).all() and float(y.sum()) == 997.0
    assert (c.calls, c.nan, c.inf, c.count) == (1000, 1, 2, 3)
    c.check()  # 0.3 % < 1 %
    assert "3 non-finite integrand values (1 NaN, 2 inf)" in (c.reason() or "")
    c.clean(torch.full((10,), float("nan")))
    with pytest.raises(NonFiniteError, match="13 of 1010 points"):
        c.check()


class _NaNDensity(torch.nn.Module):
    """A flow whose density (with gradient) is NaN: every loss is non-finite."""

    def __init__(self, flow: torch.nn.Module) -> None:
        super().__init__()
        self.flow, self.features = flow, flow.features

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.sample_and_log_prob(n)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x) * float("nan")


def test_nonfinite_losses_are_counted_and_stop_training() -> None:
    ig = SHIPPED["gauss"](2)
    torch.manual_seed(0)
    flow = _NaNDensity(build_flow(flow_spec({"flow": {"hidden": [8], "bins": 4}}, 2)))
    tr = {**DEFAULTS["trainer"], "calls": 4000, "batch": 200, "loss": "variance"}
    with pytest.raises(NonFiniteError, match="non-finite on 6 of 6 steps"):
        train_sampler(flow, ig, tr, verbose=False)
    res = train_sampler(flow, ig, {**tr, "max_nonfinite_losses": 1.0}, verbose=False)
    assert res.nonfinite_losses == res.steps == 20
    assert res.history[-1]["nonfinite_losses"] == 20


# ----------------------------------------------------------------------------- end to end

TINY = ["trainer.calls=2000", "trainer.batch=500", "trainer.buffer=2000",
        "trainer.buffered_steps=1", "estimate.calls=4000", "flow.hidden=[8]", "flow.bins=4",
        "unweight.replicas=50", "peers.vegas=false"]

USER = '''
import torch
def nan_sometimes(x):
    """gauss-like; NaN on about 0.1 % of the cube (x1 < 0.001)."""
    f = torch.exp(-((x - 0.5) ** 2).sum(-1) / 0.08)
    return torch.where(x[:, 0] < 1e-3, torch.full_like(f, float("nan")), f)
def inf_somewhere(x):
    f = torch.exp(-((x - 0.5) ** 2).sum(-1) / 0.08)
    return torch.where(x[:, 1] > 0.995, torch.full_like(f, float("inf")), f)
'''


@pytest.fixture()
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "badint.py").write_text(USER)
    return tmp_path


def test_nan_integrand_stops_the_cli_with_one_line(user_dir: Path) -> None:
    from tests.integrate.test_integrate_cli import flowctl

    res = flowctl(["integrate", "config=integrate", "integrand.target=badint:nan_sometimes",
                   "integrand.dim=2", f"run_dir={user_dir / 'run'}", *TINY], user_dir,
                  pythonpath=str(user_dir))
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite values" in lines[0] and "NaN" in lines[0], lines
    assert "Traceback" not in res.stderr


def _run(user_dir: Path, target: str, *extra: str) -> dict:
    import sys

    from flowctl.apps.integration import integrate

    sys.path.insert(0, str(user_dir))
    try:
        cfg = {"integrand": {"target": f"badint:{target}", "dim": 2},
               "flow": {"hidden": [8], "bins": 4},
               "trainer": {"calls": 2000, "batch": 500, "buffer": 2000, "buffered_steps": 1},
               "estimate": {"calls": 4000}, "unweight": {"replicas": 50},
               "peers": {"vegas": False}, "reliability": {}}
        for kv in extra:
            key, val = kv.split("=")
            sec, k = key.split(".")
            cfg[sec][k] = float(val)
        return integrate(cfg, user_dir / "run")
    finally:
        sys.path.remove(str(user_dir))


def test_nan_below_the_limit_is_reported_not_hidden(user_dir: Path) -> None:
    out = _run(user_dir, "nan_sometimes", "reliability.max_nonfinite=0.01")
    assert out["nonfinite"]["nan"] > 0 and out["nonfinite"]["inf"] == 0
    assert np.isfinite(out["integral"]) and np.isfinite(out["error"])
    assert out["reliable"] is False and "non-finite" in out["reason"]
    saved = json.loads((user_dir / "run" / "metrics.json").read_text())["integrate"]
    assert saved["reliable"] is False and saved["nonfinite"]["calls"] >= 6000


def test_inf_integrand_stops(user_dir: Path) -> None:
    with pytest.raises(NonFiniteError, match=r"inf"):
        _run(user_dir, "inf_somewhere")
