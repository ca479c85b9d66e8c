"""The CATHODE weak classifier, CWoLa weights and k-fold scoring on Gaussian toys.

Toy: background ``N(0, I_2)``, signal ``N(mu, I_2)`` with ``|mu| = 1.5``. The likelihood
ratio is monotonic in ``mu·x``, so the Bayes-optimal AUC is ``Phi(|mu| / sqrt 2) = 0.85558``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowctl.anomaly.classifier import (
    WeakClassifier,
    WeakClassifierConfig,
    balanced_weights,
    cwola_weights,
    kfold_indices,
    kfold_scores,
    train_weak_classifier,
)
from flowctl.metrics.sic import auc

torch.set_num_threads(1)

D = 1.5
MU = np.full(2, D / math.sqrt(2.0))
BAYES_AUC = 0.5 * (1.0 + math.erf(D / 2.0))     # Phi(D / sqrt 2)
FAST = {"layers": (32, 32), "epochs": 10, "top_k": 3, "batch_size": 256}


def gauss(rng: np.random.Generator, n_b: int, n_s: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.r_[rng.standard_normal((n_b, 2)), rng.standard_normal((n_s, 2)) + MU]
    return x, np.r_[np.zeros(n_b), np.ones(n_s)]


def ranks(a: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(a)).astype(float)


@pytest.fixture(scope="module")
def trained() -> tuple[WeakClassifier, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    xtr, ytr = gauss(rng, 4000, 4000)
    xva, yva = gauss(rng, 2000, 2000)
    xte, yte = gauss(rng, 20000, 20000)
    return train_weak_classifier(xtr, ytr, xva, yva, WeakClassifierConfig(**FAST)), xte, yte


def test_reaches_bayes_auc(trained: tuple[WeakClassifier, np.ndarray, np.ndarray]) -> None:
    clf, xte, yte = trained
    p = clf.predict(xte)
    assert p.dtype == np.float64 and p.shape == (len(xte),)
    assert ((p > 0) & (p < 1)).all()
    # Test-set noise of the AUC with 20k + 20k events (Hanley-McNeil) is ~0.0025; an MLP
    # trained on 8k events of a linear problem loses ~1e-3. 0.01 is ~4 sigma of the noise.
    assert auc(yte, p) == pytest.approx(BAYES_AUC, abs=0.01)


def test_history_and_top_k_epochs() -> None:
    rng = np.random.default_rng(3)
    xtr, ytr = gauss(rng, 600, 600)
    xva, yva = gauss(rng, 300, 300)
    cfg = WeakClassifierConfig(layers=(8,), epochs=7, top_k=3, n_runs=2, batch_size=64)
    rows: list[dict] = []
    clf = train_weak_classifier(xtr, ytr, xva, yva, cfg, progress=rows.append)
    assert len(clf.history) == 14 and rows == clf.history
    assert clf.wall_s > 0
    members = []
    for r in range(2):
        hist = [h for h in clf.history if h["run"] == r]
        assert [h["epoch"] for h in hist] == list(range(1, 8))
        best = sorted(hist, key=lambda h: h["val_loss"])[:3]
        # exactly k distinct epochs, the ones with the lowest val loss, best first
        assert len(set(clf.epochs[r])) == 3 == len(clf.states[r])
        assert clf.epochs[r] == [h["epoch"] for h in best]
        for sd in clf.states[r]:
            m = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
            m.load_state_dict(sd)
            members.append((r, m))
    # the two runs differ (different seeds); the prediction is the mean over epochs, then runs
    assert not torch.equal(clf.states[0][0]["0.weight"], clf.states[1][0]["0.weight"])
    xs = torch.as_tensor((xva - clf.mean) / clf.std, dtype=torch.float32)
    with torch.no_grad():
        per_run = [np.mean([torch.sigmoid(m(xs).double()).squeeze(-1).numpy()
                            for r, m in members if r == run], axis=0) for run in range(2)]
    np.testing.assert_allclose(clf.predict(xva), np.mean(per_run, axis=0), rtol=1e-12)
    np.testing.assert_allclose(clf.predict_runs(xva), per_run, rtol=1e-12)
    # top_k larger than the number of epochs keeps every epoch
    few = train_weak_classifier(xtr, ytr, xva, yva,
                                WeakClassifierConfig(layers=(8,), epochs=2, top_k=5))
    assert sorted(few.epochs[0]) == [1, 2]


def test_deterministic_and_save_load(trained: tuple[WeakClassifier, np.ndarray, np.ndarray],
                                     tmp_path) -> None:
    clf, xte, _ = trained
    p = clf.predict(xte[:5000])
    path = clf.save(tmp_path / "sub" / "clf.pt")
    back = WeakClassifier.load(path)
    assert np.array_equal(back.predict(xte[:5000]), p)
    assert back.config == clf.config and back.epochs == clf.epochs
    np.testing.assert_array_equal(back.mean, clf.mean)
    # the same seed gives the same classifier; the global torch RNG is left alone
    rng = np.random.default_rng(5)
    xtr, ytr = gauss(rng, 300, 300)
    xva, yva = gauss(rng, 200, 200)
    cfg = WeakClassifierConfig(layers=(8,), epochs=3, top_k=2)
    torch.manual_seed(123)
    before = torch.rand(1)
    a = train_weak_classifier(xtr, ytr, xva, yva, cfg).predict(xva)
    b = train_weak_classifier(xtr, ytr, xva, yva, cfg).predict(xva)
    assert np.array_equal(a, b)
    torch.manual_seed(123)
    train_weak_classifier(xtr, ytr, xva, yva, cfg)
    assert torch.equal(torch.rand(1), before)
    c = train_weak_classifier(xtr, ytr, xva, yva, WeakClassifierConfig(
        layers=(8,), epochs=3, top_k=2, seed=1)).predict(xva)
    assert not np.array_equal(a, c)


def test_class_weights_give_balanced_odds() -> None:
    """1-D toy, 10:1 imbalance: background N(0, 1), signal N(1, 1). With balanced class
    weights the optimum is P = sigmoid(x - 1/2) (equal priors); without them the prior odds
    1/10 shift the logit by -ln 10."""
    rng = np.random.default_rng(1)

    def data(n0: int, n1: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.r_[rng.standard_normal(n0), 1.0 + rng.standard_normal(n1)][:, None]
        return x, np.r_[np.zeros(n0), np.ones(n1)]

    xtr, ytr = data(10000, 1000)
    xva, yva = data(5000, 500)
    grid = np.linspace(-0.5, 1.5, 9)[:, None]
    for balanced, shift in ((True, 0.0), (False, math.log(10.0))):
        cfg = WeakClassifierConfig(layers=(16, 16), epochs=15, top_k=5, batch_size=256,
                                   class_weights=balanced)
        p = train_weak_classifier(xtr, ytr, xva, yva, cfg).predict(grid)
        target = 1.0 / (1.0 + np.exp(-(grid[:, 0] - 0.5 - shift)))
        # 11k training events fix the logit to ~0.05 in the bulk -> ~0.015 in probability
        np.testing.assert_allclose(p, target, atol=0.04)


def test_balanced_and_cwola_weights() -> None:
    y = np.r_[np.zeros(30), np.ones(10)]
    w = balanced_weights(y)
    assert w[y == 1].sum() == pytest.approx(20) and w[y == 0].sum() == pytest.approx(20)
    ev = np.linspace(0.5, 1.5, 40)
    wb = balanced_weights(y, ev)
    assert wb[y == 1].sum() == pytest.approx(wb[y == 0].sum())
    np.testing.assert_allclose(balanced_weights(y, wb), wb)     # idempotent

    rng = np.random.default_rng(2)
    mjj = np.r_[rng.uniform(3.1, 3.3, 700), rng.uniform(3.3, 3.7, 1000),
                rng.uniform(3.7, 3.9, 300)]
    sr = (mjj >= 3.3) & (mjj < 3.7)
    w = cwola_weights(mjj, sr)
    n = len(mjj)
    assert w.mean() == pytest.approx(1.0)
    assert w[sr].sum() == pytest.approx(n / 2) and w[~sr].sum() == pytest.approx(n / 2)
    lo, hi = ~sr & (mjj < 3.5), ~sr & (mjj >= 3.5)
    assert w[lo].sum() == pytest.approx(w[hi].sum()) == pytest.approx(n / 4)
    w1 = cwola_weights(mjj, sr, balance_sidebands=False)
    assert np.ptp(w1[~sr]) == 0 and w1[~sr].sum() == pytest.approx(n / 2)
    np.testing.assert_allclose(balanced_weights(sr, w), w)       # already balanced
    with pytest.raises(ValueError, match="SR and SB"):
        cwola_weights(mjj, np.ones(n, bool))
    with pytest.raises(ValueError, match="both sidebands"):
        cwola_weights(mjj[:1700], sr[:1700])


def test_cwola_principle() -> None:
    """Mixed samples with signal fractions 0.4 vs 0.1 (CWoLa, arXiv:1708.02949): the
    classifier is monotonic in the S/B likelihood ratio, so on pure S vs B it is as good as
    the supervised classifier trained on the same number of events."""
    rng = np.random.default_rng(4)

    def mixed(n: int, f: float) -> np.ndarray:
        n_s = rng.binomial(n, f)
        return gauss(rng, n - n_s, n_s)[0]

    def cwola(n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.r_[mixed(n, 0.4), mixed(n, 0.1)], np.r_[np.ones(n), np.zeros(n)]

    cfg = WeakClassifierConfig(layers=(32, 32), epochs=10, top_k=5, batch_size=256)
    xtr, ytr = cwola(10000)
    xva, yva = cwola(5000)
    xte, yte = gauss(rng, 20000, 20000)
    p_cw = train_weak_classifier(xtr, ytr, xva, yva, cfg).predict(xte)
    xs, ys = gauss(rng, 10000, 10000)
    xsv, ysv = gauss(rng, 5000, 5000)
    p_sup = train_weak_classifier(xs, ys, xsv, ysv, cfg).predict(xte)
    a_cw, a_sup = auc(yte, p_cw), auc(yte, p_sup)
    # both share the test set, so their difference has little test noise; 0.01 allows for
    # the CWoLa classifier's larger training noise (its effective signal fraction is 0.3)
    assert a_cw == pytest.approx(a_sup, abs=0.01)
    assert a_cw == pytest.approx(BAYES_AUC, abs=0.015)
    # monotonic in the true likelihood ratio exp(mu.x - |mu|^2/2): Spearman correlation
    rho = np.corrcoef(ranks(p_cw), ranks(xte @ MU))[0, 1]
    assert rho > 0.98


def test_kfold_scores_are_out_of_fold() -> None:
    """Pure-noise labels: a network that memorises its training rows scores them well, but
    out-of-fold scores carry no information (AUC ~ 0.5, std ~0.02 for 1.2k events)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1200, 4))
    y = (rng.random(1200) < 0.5).astype(float)
    folds = kfold_indices(y, 4, seed=0)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(1200))
    assert all(abs(y[f].mean() - y.mean()) < 0.01 for f in folds)     # stratified
    cfg = WeakClassifierConfig(layers=(64, 64), epochs=30, top_k=1, batch_size=64, lr=3e-3)
    models: list[WeakClassifier] = []
    s = kfold_scores(x, y, cfg, k=4, classifiers=models)
    assert s.shape == (1200,) and np.isfinite(s).all() and len(models) == 4
    assert auc(y, s) == pytest.approx(0.5, abs=0.07)
    # the same classifiers on rows they trained on (fold 0's model trained on folds 2, 3)
    train0 = np.r_[folds[2], folds[3]]
    assert auc(y[train0], models[0].predict(x[train0])) > auc(y, s) + 0.03
    with pytest.raises(ValueError, match="k >= 3"):
        kfold_indices(y, 2)


def test_config_from_dict() -> None:
    cfg = WeakClassifierConfig.from_dict({"layers": [16, 16], "epochs": 5})
    assert cfg.layers == (16, 16) and cfg.epochs == 5 and cfg.top_k == 10
    assert WeakClassifierConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown weak-classifier key.*hidden.*valid"):
        WeakClassifierConfig.from_dict({"hidden": [3], "layers": [3]})
    with pytest.raises(ValueError, match="top_k"):
        WeakClassifierConfig(top_k=0)
    with pytest.raises(ValueError, match="both labels"):
        train_weak_classifier(np.zeros((4, 1)), np.zeros(4), np.zeros((4, 1)),
                              np.r_[0, 1, 0, 1])
