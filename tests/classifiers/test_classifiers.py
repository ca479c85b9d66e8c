"""flowctl.classifiers (the one classifier trainer) and flowctl.metrics.roc (the one ROC/AUC)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowctl.anomaly.classifier as anomaly_classifier
import flowctl.metrics.classifier as old_path
from flowctl import classifiers
from flowctl.classifiers import build_mlp, fit_classifier, predict_proba
from flowctl.metrics import roc, sic

torch.set_num_threads(1)


def test_one_roc_auc_implementation():
    assert sic.auc is roc.auc and sic.roc_curve is roc.roc_curve
    assert old_path.auc is roc.auc and old_path.train_classifier is classifiers.train_classifier
    assert anomaly_classifier.train_weak_classifier is classifiers.train_weak_classifier
    assert anomaly_classifier.kfold_fit_score is classifiers.kfold_fit_score


def test_weighted_roc_equals_repeated_rows_and_checks_inputs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # ties
    w = rng.integers(0, 4, 200)
    w[:2] = 1
    fa, ta, thr = roc.roc_curve(y, s, w.astype(float))
    fb, tb, _ = roc.roc_curve(np.repeat(y, w), np.repeat(s, w))
    keep = np.r_[True, np.isin(thr[1:], np.repeat(s, w))]  # scores whose rows all had w = 0
    np.testing.assert_allclose(fa[keep], fb, atol=1e-12)
    np.testing.assert_allclose(ta[keep], tb, atol=1e-12)
    assert roc.auc(y, s, w) == pytest.approx(roc.auc(np.repeat(y, w), np.repeat(s, w)))
    assert roc.auc(y, -s) == pytest.approx(1 - roc.auc(y, s))
    with pytest.raises(ValueError, match="both classes"):
        roc.auc(np.zeros(5), np.arange(5.0))
    with pytest.raises(ValueError, match="NaN or inf"):
        roc.auc(np.r_[0, 1], np.r_[0.0, np.nan])
    assert 0.0 < roc.bootstrap_auc(y, s, 50) < 0.1


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.5).float()
    x = torch.randn(n, 3, generator=g) + 1.2 * y[:, None]
    return x, y, torch.ones(n)


def test_fit_keeps_top_k_epochs_stops_early_and_leaves_global_rng_alone():
    xt, yt, wt = _toy(600, 0)
    xv, yv, wv = _toy(300, 1)
    state = torch.random.get_rng_state()
    kw = {"lr": 3e-2, "batch_size": 64, "epochs": 40, "seed": 3}
    fit = fit_classifier(lambda: build_mlp(3, [16, 16], "relu"), xt, yt, wt, xv, yv, wv,
                         top_k=4, patience=5, **kw)
    assert torch.equal(state, torch.random.get_rng_state())
    vals = {r["epoch"]: r["val_loss"] for r in fit.history}
    assert len(fit.states) == 4 and fit.best_epoch == min(vals, key=vals.get)
    assert [vals[e] for e in fit.epochs] == sorted(vals[e] for e in fit.epochs)
    assert fit.epochs_run < 40 and fit.epochs_run - fit.best_epoch == 5  # early stopping
    again = fit_classifier(lambda: build_mlp(3, [16, 16], "relu"), xt, yt, wt, xv, yv, wv,
                           top_k=4, patience=5, **kw)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(fit.states, again.states) for k in a)
    models = []
    for sd in fit.states:
        m = build_mlp(3, [16, 16], "relu")
        m.load_state_dict(sd)
        models.append(m)
    p = predict_proba(models, xv.numpy())
    assert p.shape == (300,) and roc.auc(yv.numpy(), p) > 0.75
