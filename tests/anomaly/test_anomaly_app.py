"""The anomaly app: splits, the density helpers, and CATHODE / CWoLa / ANODE / references end
to end through the CLI on a small synthetic LHCO set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flowctl.anomaly.density import ensemble_log_prob, kde_sample, sample_ensemble
from flowctl.anomaly.splits import data_signature, load_splits
from flowctl.data.synth.lhco import FILES, write_all
from flowctl.data.table import DataError
from flowctl.flows import build
from tests.conftest import run_flowctl

# small and fast: every CLI call below finishes in seconds on one CPU thread
FAST = ["trainer.epochs=2", "trainer.keep_best=2", "ensemble=2", "sample.n=5000",
        "classifier.epochs=3", "classifier.top_k=2", "classifier.layers=[16,16]",
        "trainer.log_every=1000"]


@pytest.fixture(scope="module")
def lhco(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("lhco")
    return write_all(out, 30_000, signal_fraction=0.004, seed=3)


def _data(files: dict[str, Path]) -> dict:
    return {"path": str(files["data"]), "extra_bkg": str(files["extra_bkg"]),
            "extra_sig": str(files["extra_sig"])}


def _overrides(files: dict[str, Path]) -> list[str]:
    return [f"data.{k}={v}" for k, v in _data(files).items()]


# --------------------------------------------------------------------------- splits


def test_splits_are_disjoint_fixed_and_labelled(lhco: dict[str, Path]) -> None:
    sp = load_splits(_data(lhco), need_test=True)
    lo, hi = sp.sr
    for rows in (sp.sr_train, sp.sr_val, sp.test, sp.bkg_train, sp.sig_train):
        assert ((rows[:, 0] > lo) & (rows[:, 0] < hi)).all()
    for rows in (sp.sb_train, sp.sb_val):
        assert ((rows[:, 0] <= lo) | (rows[:, 0] >= hi)).all()
    cw = np.concatenate([sp.cwola_train, sp.cwola_val])[:, 0]
    assert (((cw >= lo - 0.2) & (cw <= lo)) | ((cw >= hi) & (cw <= hi + 0.2))).all()
    assert set(np.unique(sp.test[:, 5])) == {0.0, 1.0}
    assert (sp.bkg_train[:, 5] == 0).all() and (sp.sig_train[:, 5] == 1).all()
    # the test set does not overlap the labelled training sets
    test_keys = {tuple(r) for r in sp.test[:, :5].round(9)}
    assert not test_keys & {tuple(r) for r in sp.bkg_train[:, :5].round(9)}
    assert not test_keys & {tuple(r) for r in sp.sig_train[:, :5].round(9)}
    # same split seed -> same sets (seeds vary only the training)
    again = load_splits(_data(lhco), need_test=True)
    np.testing.assert_array_equal(sp.test, again.test)
    np.testing.assert_array_equal(sp.sb_train, again.sb_train)
    info = sp.info
    assert info["sr_signal"] + info["sr_background"] == info["n_sr"]
    assert 0 < info["sr_s_over_b"] < 0.1


def test_n_sig_keeps_that_many_signal_events(lhco: dict[str, Path]) -> None:
    total = int(load_splits(_data(lhco)).info["n_signal"])
    sp = load_splits({**_data(lhco), "n_sig": 20})
    assert total > 20 and sp.info["n_signal"] == 20
    # without an extra-signal file the signal set aside tests the methods
    sp = load_splits({"path": str(lhco["data"]), "extra_bkg": str(lhco["extra_bkg"]),
                      "n_sig": 20}, need_test=True)
    assert sp.info["n_test_signal"] > 0


def test_bad_data_config_is_named(lhco: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.extra_bkg"):
        load_splits({"path": str(lhco["data"])}, need_test=True)
    with pytest.raises(DataError, match=r"nope\.h5: no such file \(data.path\)"):
        load_splits({"path": str(tmp_path / "nope.h5")})
    with pytest.raises(DataError, match="unknown data key"):
        load_splits({**_data(lhco), "srr": [3.3, 3.7]})
    with pytest.raises(DataError, match="data.sr"):
        load_splits({**_data(lhco), "sr": [3.7, 3.3]})


def test_signature_ignores_path_spelling(lhco: dict[str, Path]) -> None:
    a = data_signature(_data(lhco))
    b = data_signature({**_data(lhco), "path": str(lhco["data"].parent / "." /
                                                   lhco["data"].name)})
    assert a == b
    assert data_signature({**_data(lhco), "shift": 0.1}) != a


# --------------------------------------------------------------------------- density


def test_kde_sample_follows_the_data_and_stays_in_range() -> None:
    rng = np.random.default_rng(0)
    m = 3.3 + 0.4 * rng.beta(2.0, 3.0, 20_000)
    draw = kde_sample(m, 50_000, 0.01, np.random.default_rng(1))
    assert draw.min() >= m.min() and draw.max() <= m.max()
    assert abs(draw.mean() - m.mean()) < 0.003 and abs(draw.std() - m.std()) < 0.003
    qs = [0.1, 0.5, 0.9]
    np.testing.assert_allclose(np.quantile(draw, qs), np.quantile(m, qs), atol=0.005)


def _anomaly_flow(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = {"kind": "maf", "features": 4, "context": 1, "transforms": 2, "hidden": [16],
            "transform": "affine", "norm": "batchnorm", "seed": seed,
            "preprocessing": [{"kind": "minmax", "margin": 0.001}, {"kind": "logit"},
                              {"kind": "standardize"}]}
    f = build(spec)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2000, 4, generator=g) * torch.tensor([0.3, 0.5, 1.0, 1.0])
    f.initialize(x, 3.3 + 0.4 * torch.rand(2000, 1, generator=g))
    for p in f.parameters():  # a non-trivial (untrained but random) conditional density
        p.data.add_(0.05 * torch.randn(p.shape, generator=g))
    return f.eval()


def test_density_in_physical_units_is_normalized() -> None:
    """The preprocessing Jacobians are inside log_prob: p(x|m) integrates to 1 over the
    min-max box (the logit maps it onto R^4), estimated by uniform Monte Carlo."""
    f = _anomaly_flow(0)
    lo, hi = f.transform[0].lo.numpy(), f.transform[0].hi.numpy()
    rng = np.random.default_rng(0)
    n = 400_000
    x = lo + (hi - lo) * rng.random((n, 4))
    lp = ensemble_log_prob([f], x, np.full(n, 3.5))
    vals = np.exp(lp) * np.prod(hi - lo)
    est, err = vals.mean(), vals.std() / math.sqrt(n)
    assert abs(est - 1.0) < max(4 * err, 0.02), (est, err)


def test_ensemble_log_prob_is_log_mean_exp_and_sampling_splits_the_work() -> None:
    a, b = _anomaly_flow(1), _anomaly_flow(2)
    rng = np.random.default_rng(0)
    x = rng.random((50, 4)) * [0.3, 0.5, 1.0, 1.0]
    m = np.full(50, 3.5)
    la, lb = ensemble_log_prob([a], x, m), ensemble_log_prob([b], x, m)
    np.testing.assert_allclose(ensemble_log_prob([a, b], x, m),
                               np.logaddexp(la, lb) - math.log(2), rtol=1e-10, atol=1e-10)
    torch.manual_seed(0)
    s = sample_ensemble([a, b], np.full(1001, 3.5))
    assert s.shape == (1001, 4) and np.isfinite(s).all()
    lo, hi = a.transform[0].lo.numpy(), a.transform[0].hi.numpy()
    assert (s[:501] >= lo).all() and (s[:501] <= hi).all()  # first half from flow a


# --------------------------------------------------------------------------- CLI


def test_cathode_cwola_and_evaluate_through_the_cli(lhco: dict[str, Path],
                                                   tmp_path: Path) -> None:
    data = _overrides(lhco)
    res = run_flowctl(["train", "config=cathode_tiny", "run_dir=cathode", *data, *FAST],
                      tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "cathode"
    assert len(list((run / "checkpoints" / "top").glob("epoch_*.pt"))) == 2
    res = run_flowctl(["classify", f"run={run}"], tmp_path)  # no samples yet
    assert res.returncode == 2 and "flowctl sample" in res.stderr
    res = run_flowctl(["sample", f"run={run}"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["sample"]["n_drawn"] == 5000 and 4000 < m["sample"]["n_kept"] <= 5000
    res = run_flowctl(["classify", f"run={run}"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "cathode: test AUC" in res.stdout
    assert (run / "scores.npz").exists() and (run / "checkpoints" / "classifier.pt").exists()

    res = run_flowctl(["train", "config=cwola_tiny", "run_dir=cwola", *data, *FAST], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_flowctl(["sample", f"run={tmp_path / 'cwola'}"], tmp_path)
    assert res.returncode == 2 and "does not use them" in res.stderr

    res = run_flowctl(["evaluate", f"run={run}", f"eval.search=[{tmp_path}]",
                       "eval.template_epochs=3", "eval.template_max_events=3000"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert set(ev["methods"]) == {"cathode", "cwola"}
    for method in ("cathode", "cwola"):
        s = ev["methods"][method]
        assert s["max_sic"]["n"] == 1 and s["max_sic"]["median"] > 0
        assert 0.0 <= s["auc"]["median"] <= 1.0
    assert (run / "plots" / "roc_sic.png").exists()
    # the background-template diagnostic: true SR background vs the run's samples
    tc = ev["template_check"]
    assert tc["auc"]["n"] == 1 and 0.4 < tc["auc"]["median"] < 1.0
    one = tc["runs"][str(run.resolve())]
    assert set(one["feature_auc"]) == {"mj1", "dmj", "tau21j1", "tau21j2"}
    assert "background template" in res.stdout
    assert json.loads((run / "metrics.json").read_text())["template_check"]["auc"] == one["auc"]


def test_anode_and_references_write_scores(lhco: dict[str, Path], tmp_path: Path) -> None:
    data = _overrides(lhco)
    for method in ("anode", "idealized", "supervised"):
        res = run_flowctl(["train", f"config={method}_tiny", f"run_dir={method}", *data,
                           *FAST], tmp_path, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        s = json.loads((tmp_path / method / "metrics.json").read_text())["scores"]
        assert s["method"] == method and 0.0 <= s["auc"] <= 1.0
    assert (tmp_path / "anode" / "inner" / "checkpoints" / "best.pt").exists()
    # the supervised reference sees the labels: it must separate signal clearly
    sup = json.loads((tmp_path / "supervised" / "metrics.json").read_text())["scores"]
    assert sup["auc"] > 0.9
    # a run on other data is not mixed in
    res = run_flowctl(["evaluate", f"run={tmp_path / 'anode'}", f"eval.search=[{tmp_path}]",
                       "eval.plots=false"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads((tmp_path / "anode" / "metrics.json").read_text())["evaluate"]
    assert set(ev["methods"]) == {"anode", "idealized", "supervised"}


def test_user_errors_are_one_line(lhco: dict[str, Path], tmp_path: Path) -> None:
    res = run_flowctl(["train", "config=cwola_tiny", "run_dir=r",
                       f"data.path={tmp_path / 'missing.h5'}"], tmp_path)
    assert res.returncode == 2 and "missing.h5: no such file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run_flowctl(["train", "config=idealized_tiny", "run_dir=r2",
                       f"data.path={lhco['data']}", "data.extra_bkg=null",
                       "data.extra_sig=null"], tmp_path)
    assert res.returncode == 2 and "data.extra_bkg" in res.stderr
    res = run_flowctl(["train", "config=cwola_tiny", "run_dir=r3", *_overrides(lhco),
                       "classifier.nope=1"], tmp_path)
    assert res.returncode == 2 and "nope" in res.stderr


@pytest.mark.slow
def test_cathode_tiny_chain_as_in_the_makefile(tmp_path: Path) -> None:
    """What `make cathode-tiny` runs, with the shipped tiny configs unchanged: <= 5 min."""
    write_all(tmp_path / "data" / "lhco-tiny", 200_000, signal_fraction=0.001)
    assert (tmp_path / "data" / "lhco-tiny" / FILES["data"]).exists()
    for m in ("anode", "cwola", "idealized", "supervised"):
        res = run_flowctl(["train", f"config={m}_tiny"], tmp_path, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    for cmd in (["train", "config=cathode_tiny"], ["sample", "config=cathode_tiny"],
                ["classify", "config=cathode_tiny"], ["evaluate", "config=cathode_tiny"]):
        res = run_flowctl(cmd, tmp_path, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    runs = list((tmp_path / "outputs" / "cathode_tiny").glob("*/metrics.json"))
    assert len(runs) == 1
    ev = json.loads(runs[0].read_text())["evaluate"]["methods"]
    assert set(ev) == {"cathode", "anode", "cwola", "idealized", "supervised"}
    # the labelled references must beat chance clearly even on tiny settings
    assert ev["supervised"]["max_sic"]["median"] > 5
    assert ev["idealized"]["max_sic"]["median"] > 2
