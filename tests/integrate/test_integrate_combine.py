"""The training batches joined to the fresh estimate (flowctl.integration.combine) and the
answer wiring (flowctl.integration.answer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowctl.apps.integration import DEFAULTS, flow_spec
from flowctl.flows import build as build_flow
from flowctl.integrands import SHIPPED
from flowctl.integration import NonFinite, train_nis
from flowctl.integration.answer import flowctl_answer
from flowctl.integration.combine import combine, training_estimate
from flowctl.integration.diagnostics import THRESHOLDS
from flowctl.integration.sampling import Guarded


def _history(means: list[float], errors: list[float], batch: int = 1000) -> list[dict]:
    return [{"online_step": i + 1, "calls": (i + 1) * batch, "estimate": m, "error": e}
            for i, (m, e) in enumerate(zip(means, errors))]


def test_training_estimate_weights_each_batch_by_its_predecessor() -> None:
    # batches 3 and 4 (start 0.5 of 4): weights 1/err(2)^2 = 1 and 1/err(3)^2 = 1/4
    h = _history([9.0, 9.0, 1.0, 2.0], [1.0, 1.0, 2.0, 1.0])
    t = training_estimate(h, start=0.5)
    assert t is not None and t.batches == 2 and t.calls == 2000
    assert t.integral == pytest.approx((1.0 * 1 + 2.0 * 0.25) / 1.25)
    assert t.error == pytest.approx(math.sqrt(1 * 4 + 0.0625 * 1) / 1.25)
    assert training_estimate(h[:2], start=0.5) is None  # one batch left: nothing to average
    with pytest.raises(ValueError):
        training_estimate(h, start=1.0)


def test_combine_gains_when_batches_agree_and_falls_back_when_not() -> None:
    rng = np.random.default_rng(0)
    errs = [0.01] * 100
    h = _history(list(1.0 + 0.01 * rng.standard_normal(100)), errs)
    c = combine(1.0005, 0.002, h, start=0.5)
    # 50 batches of error 0.01 average to ~0.0014, joined with 0.002: ~0.0012
    assert c.used and c.reason is None and c.error < 0.0013 and abs(c.integral - 1) < 0.004
    assert 0.2 < c.weight_fresh < 0.5
    bad = _history(list(1.0 + 0.05 * rng.standard_normal(100)), errs)  # errors 5x too small
    c = combine(1.0, 0.002, bad, start=0.5)
    assert not c.used and "disagree" in (c.reason or "") and c.error == 0.002
    far = combine(1.05, 0.002, h, start=0.5)  # the fresh estimate 25 errors away
    assert not far.used and "errors from the fresh estimate" in (far.reason or "")
    assert far.integral == 1.05


def test_answer_joins_training_batches_on_a_gaussian() -> None:
    ig = SHIPPED["gauss"](2)
    torch.manual_seed(0)
    spec = flow_spec({"flow": {"hidden": [16, 16], "bins": 8}}, 2)
    tr = {**DEFAULTS["trainer"], "calls": 8000, "batch": 500, "buffer": 8000,
          "buffered_steps": 2, "log_every": 10**9}
    f = Guarded(ig, NonFinite())
    rep = train_nis(lambda: build_flow(spec), f, 2, tr, integrand=ig, seed=0, verbose=False)
    es = {**DEFAULTS["estimate"], "combine_training": True, "combine_from": 0.25}
    uw = {"replicas": 50, "replica_size": None}
    est, w, _ = flowctl_answer(rep, f, ig, 4000, es, THRESHOLDS, uw, seed=0)
    assert est["combined"]["used"], est["combined"]
    assert est["combined"]["training"]["batches"] >= 10
    assert est["error"] < est["fresh_error"]
    assert abs(est["integral"] - ig.exact) < 4 * est["error"]
    assert est["calls"] == 12000 and len(w) == 4000 and est["reliable"]
    off, _, _ = flowctl_answer(rep, f, ig, 4000, {**es, "combine_training": False},
                               THRESHOLDS, uw, seed=0)
    assert "combined" not in off and off["integral"] == off["fresh_integral"]
