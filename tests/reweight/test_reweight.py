"""DCTR reweighting: weighted AUC/classifier, weights, save/load, the reweight app and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.apps import load_app
from flowctl.apps.common import UserError
from flowctl.apps.reweight import hist_compare
from flowctl.classifiers import (
    ClassifierConfig,
    ClassifierPredictor,
    classifier_state,
    dctr_weights,
    train_classifier,
)
from flowctl.metrics.roc import auc
from tests.conftest import run_flowctl

FAST = ClassifierConfig(hidden=(16, 16), epochs=5, batch_size=256, bootstrap=10, patience=3)


def test_weighted_auc_is_duplication() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # with ties
    w = rng.integers(1, 4, 300)
    assert auc(y, s, np.ones(300)) == pytest.approx(auc(y, s))
    assert auc(y, s, w) == pytest.approx(auc(np.repeat(y, w), np.repeat(s, w)))


def test_dctr_weights_clip_and_normalize() -> None:
    p = np.array([0.5, 0.5, 0.9, 0.999])
    w, frac = dctr_weights(p, clip=3.0)
    assert frac == 0.25 and w.mean() == pytest.approx(1.0)
    assert np.all(np.diff(w) >= 0)
    w2, f2 = dctr_weights(p, clip=None, normalize=False)
    assert f2 == 0.0 and w2[2] == pytest.approx(9.0)
    # one D -> 1 outlier must not squash all other weights (clip after normalising, stably)
    w3, f3 = dctr_weights(np.r_[np.full(999, 0.5), 1 - 1e-6], clip=10.0)
    assert w3.max() == pytest.approx(10.0) and w3.mean() == pytest.approx(1.0)
    assert w3[0] == pytest.approx(990 / 999) and f3 == pytest.approx(1e-3)


def test_exact_ratio_weights_remove_the_difference() -> None:
    """x0 ~ N(0.5, 1) weighted by N(0,1)/N(0.5,1) is indistinguishable from x1 ~ N(0, 1)."""
    rng = np.random.default_rng(1)
    x0 = rng.normal(0.5, 1.0, (3000, 1))
    x1 = rng.normal(0.0, 1.0, (3000, 1))
    w = np.exp(-0.5 * x0[:, 0] ** 2 + 0.5 * (x0[:, 0] - 0.5) ** 2)
    plain = train_classifier(x0, x1, FAST)
    weighted = train_classifier(x0, x1, FAST, w0=w)
    assert plain.auc > 0.6 and abs(weighted.auc - 0.5) < 0.04
    assert weighted.test_weights is not None and plain.test_weights is None
    with pytest.raises(ValueError, match="w0"):
        train_classifier(x0, x1, FAST, w0=-w)


def test_predictor_roundtrip() -> None:
    rng = np.random.default_rng(2)
    x0, x1 = rng.normal(0, 1, (300, 2)), rng.normal(0.7, 1, (300, 2))
    res = train_classifier(x0, x1, FAST)
    again = ClassifierPredictor.from_state(classifier_state(res, FAST))
    np.testing.assert_allclose(again.predict(x0), res.predict(x0))
    assert res.splits is not None and sum(len(s) for s in res.splits[0]) == 300


def test_hist_compare() -> None:
    rng = np.random.default_rng(3)
    e = np.linspace(-3, 3, 21)
    same = hist_compare(rng.normal(size=20000), rng.normal(size=20000), e)
    diff = hist_compare(rng.normal(size=20000), rng.normal(0.3, 1, 20000), e)
    assert 0.3 < same["chi2_ndf"] < 2.5 and diff["chi2_ndf"] > 10
    assert diff["separation"] > same["separation"] and same["ndf"] == 19


def _tables(tmp: Path, n: int = 3000) -> tuple[Path, Path]:
    rng = np.random.default_rng(4)
    t = np.stack([rng.normal(0, 1, n), rng.gamma(2.0, 1.0, n)], 1)
    g = np.stack([rng.normal(0.3, 1.1, n), rng.gamma(2.4, 1.0, n)], 1)
    with h5py.File(tmp / "truth.h5", "w") as f:
        f["events"] = t
    np.save(tmp / "gen.npy", g)
    return tmp / "truth.h5", tmp / "gen.npy"


def _cfg(truth: Path | None, gen: Path | None) -> dict:
    return {"app": "reweight", "seed": 0, "truth": truth and str(truth),
            "generated": gen and str(gen), "truth_key": None, "generated_key": None,
            "columns": None,
            "classifier": {"hidden": [16, 16], "epochs": 8, "batch_size": 256,
                           "bootstrap": 10, "patience": 3},
            "weights": {"clip": 10.0, "normalize": True},
            "eval": {"bins": 20, "fresh": True, "plots": True}}


def test_app_train_evaluate(tmp_path: Path) -> None:
    t, g = _tables(tmp_path)
    app = load_app("reweight")
    run = tmp_path / "run"
    out = app.COMMANDS["train"](_cfg(t, g), run)
    assert out["auc"] > 0.55 and 0.0 <= out["weights_clipped_fraction"] < 0.05
    assert (run / "checkpoints" / "best.pt").exists()
    with h5py.File(run / "weights.h5") as f:
        assert f["weights"].shape == (3000,) and set(np.unique(f["split"])) == {0, 1, 2}
    ev = app.COMMANDS["evaluate"](_cfg(t, g), run)
    assert ev["n_generated"] == 600 and ev["rows"].startswith("the classifier's test")
    assert ev["chi2_ndf_mean"]["after"] < ev["chi2_ndf_mean"]["before"]
    assert ev["auc_after"] < ev["auc_before"]
    assert (run / "plots" / "marginals.png").exists()
    assert {"train", "evaluate"} <= set(json.loads((run / "metrics.json").read_text()))
    with pytest.raises(UserError, match="truth=FILE"):
        app.COMMANDS["train"](_cfg(None, g), tmp_path / "r2")


def test_cli_train_evaluate(tmp_path: Path) -> None:
    t, g = _tables(tmp_path, 1000)
    run = tmp_path / "run"
    res = run_flowctl(["train", "config=classifier", f"truth={t}", f"generated={g}",
                       f"run_dir={run}", "classifier.epochs=3", "classifier.hidden=[16]",
                       "classifier.bootstrap=5"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "AUC" in res.stdout and (run / "weights.h5").exists()
    res = run_flowctl(["evaluate", f"run={run}", "eval.fresh=false", "eval.plots=false"],
                      tmp_path)
    assert res.returncode == 0, res.stderr
    assert "χ²/ndf" in res.stdout


@pytest.mark.slow
def test_mismodelled_generator_reweighted_to_auc_half(tmp_path: Path) -> None:
    """A shifted/wider 3-D generator: after DCTR weights a fresh classifier is near 0.5."""
    def make(n: int, rng: np.random.Generator, mis: float) -> np.ndarray:
        a = rng.normal(0.15 * mis, 1 + 0.1 * mis, n)
        b = (0.5 - 0.2 * mis) * a + rng.normal(0, 0.8 + 0.1 * mis, n)
        return np.stack([a, b, rng.gamma(2 + 0.3 * mis, 1 - 0.05 * mis, n)], 1)

    for name, n, s in (("t", 60000, 1), ("g", 60000, 2), ("t2", 30000, 11), ("g2", 30000, 12)):
        np.save(tmp_path / f"{name}.npy", make(n, np.random.default_rng(s), name[0] == "g"))
    run = tmp_path / "run"
    res = run_flowctl(["train", "config=classifier", f"truth={tmp_path / 't.npy'}",
                       f"generated={tmp_path / 'g.npy'}", f"run_dir={run}"], tmp_path,
                      timeout=900)
    assert res.returncode == 0, res.stderr
    res = run_flowctl(["evaluate", f"run={run}", f"truth={tmp_path / 't2.npy'}",
                       f"generated={tmp_path / 'g2.npy'}", "eval.plots=false"], tmp_path,
                      timeout=900)
    assert res.returncode == 0, res.stderr
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert ev["auc_before"] > 0.57 and abs(ev["auc_after"] - 0.5) < 0.03
    assert ev["chi2_ndf_mean"]["after"] < 0.5 * ev["chi2_ndf_mean"]["before"]
