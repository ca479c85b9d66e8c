"""The background-template diagnostic: a classifier true background vs template samples."""

from __future__ import annotations

import numpy as np
import pytest

from flowctl.anomaly.classifier import WeakClassifierConfig
from flowctl.anomaly.template import template_check

CFG = WeakClassifierConfig(layers=(16, 16), epochs=4, top_k=2, batch_size=256)


def test_a_perfect_template_gives_auc_one_half_and_a_bad_one_does_not() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(6000, 3))
    good = rng.normal(size=(9000, 3))
    bad = good.copy()
    bad[:, 1] = 1.3 * bad[:, 1] + 0.3          # one mismodelled feature
    same = template_check(truth, good, CFG, names=["a", "b", "c"])
    off = template_check(truth, bad, CFG, names=["a", "b", "c"])
    assert same["n_per_class"] == 6000 and same["n_test_per_class"] == 1500
    assert abs(same["auc"] - 0.5) < 4 * same["auc_null_sd"]
    assert off["auc"] > 0.5 + 5 * off["auc_null_sd"]
    # the per-feature AUCs point at the shifted feature
    fa = {k: abs(v - 0.5) for k, v in off["feature_auc"].items()}
    assert max(fa, key=fa.get) == "b" and fa["a"] < 0.05


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same F"):
        template_check(np.zeros((50, 2)), np.zeros((50, 3)), CFG)
    with pytest.raises(ValueError, match="at least 8"):
        template_check(np.zeros((5, 2)), np.zeros((50, 2)), CFG)
