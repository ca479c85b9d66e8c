"""The posterior application: in-process train/sample/evaluate, the CLI end to end, and
(slow) the calibration and KL of the shipped linear-Gaussian config."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.apps import load_app
from flowctl.apps.common import UserError
from tests.conftest import run_flowctl


def _cfg(**sim: object) -> dict:
    return {
        "app": "posterior", "seed": 0, "n": 64, "observed": None, "observed_key": None,
        "observed_columns": None,
        "flow": {"kind": "coupling", "features": None, "context": None, "transforms": 2,
                 "hidden": [16], "transform": "affine", "standardize": True},
        "simulator": {"kind": "linear_gaussian", "target": None, "params": {}, **sim},
        "sims": {"n_train": 600, "n_val": 100, "n_test": 100, "seed": 0},
        "trainer": {"device": "cpu", "epochs": 2, "batch_size": 100, "schedule": "constant",
                    "log_every": 100},
        "eval": {"n_sbc": 100, "n_post": 20, "rank_bins": 5, "plots": True,
                 "c2st_observations": 1, "c2st_draws": 1000, "c2st_max_epochs": 30},
    }


def test_train_sample_evaluate_in_process(tmp_path: Path) -> None:
    app = load_app("posterior")
    cfg = _cfg()
    run = tmp_path / "run"
    out = app.COMMANDS["train"](cfg, run)
    assert out["simulator"]["theta_dim"] == 2 and cfg["flow"]["context"] == 3
    assert len(cfg["context_norm"]["mean"]) == 3
    s = app.COMMANDS["sample"](cfg, run)
    with h5py.File(run / "posterior_samples.h5") as f:
        assert f["samples"].shape == (1, 64, 2) and f["theta_true"].shape == (1, 2)
    assert s["n_observations"] == 1
    ev = app.COMMANDS["evaluate"](cfg, run)
    assert set(ev["coverage"]) == {"50", "68", "95"}
    assert all(0.0 <= v["coverage"] <= 1.0 for v in ev["coverage"].values())
    assert np.isfinite(ev["kl"]) and ev["kl"] > -0.2 and len(ev["sbc_rank_chi2_ndf"]) == 2
    assert (run / "plots" / "sbc_ranks.png").exists() and (run / "plots" / "coverage.png").exists()
    assert 0.5 <= ev["c2st"]["c2st"] <= 1.0 and ev["c2st"]["n_observations"] == 1
    assert set(ev["tarp"]["coverage"]) == {"50", "68", "95"}
    assert (run / "plots" / "posterior_vs_reference.png").exists()
    m = json.loads((run / "metrics.json").read_text())
    assert {"train", "sample", "evaluate"} <= set(m)
    # a reference file of the wrong shape is refused before any sampling
    np.savetxt(tmp_path / "obs.csv", np.zeros((2, 3)), delimiter=",")
    np.save(tmp_path / "ref.npy", np.zeros((3, 10, 2)))
    with pytest.raises(UserError, match=r"expected \[L, 2\]"):
        app.COMMANDS["evaluate"]({**cfg, "observed": str(tmp_path / "obs.csv"),
                                  "eval": {**cfg["eval"], "reference": str(tmp_path / "ref.npy")}},
                                 run)
    # a nonlinear simulator has no KL but the same calibration report
    cfg2 = _cfg(kind="two_moons")
    cfg2["eval"]["plots"] = False
    cfg2["sims"]["n_train"], cfg2["trainer"]["epochs"] = 200, 1
    app.COMMANDS["train"](cfg2, tmp_path / "moons")
    ev2 = app.COMMANDS["evaluate"](cfg2, tmp_path / "moons")
    assert "kl" not in ev2 and ev2["n_sbc"] == 100


def test_observed_errors(tmp_path: Path) -> None:
    app = load_app("posterior")
    cfg = _cfg(target="tests.posterior.usersim_posterior:shifted")
    cfg["flow"]["kind"] = "maf"  # θ is 1-D: a coupling flow needs two features
    cfg["sims"]["n_train"] = 200
    cfg["trainer"]["epochs"] = 1
    run = tmp_path / "run"
    app.COMMANDS["train"](cfg, run)
    np.save(tmp_path / "obs.npy", np.zeros((3, 5)))
    with pytest.raises(UserError, match="5 columns"):
        app.COMMANDS["sample"]({**cfg, "observed": str(tmp_path / "obs.npy")}, run)
    with pytest.raises(UserError, match="n_train"):
        app.COMMANDS["train"]({**_cfg(), "sims": {"n_train": 1}}, tmp_path / "r2")


def test_cli_train_sample_observed_evaluate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = run_flowctl(["train", "config=posterior_gaussian_tiny", f"run_dir={run}",
                       "trainer.epochs=1"], tmp_path)
    assert res.returncode == 0, res.stderr
    obs = tmp_path / "obs.csv"
    np.savetxt(obs, np.array([[0.5, -0.2, 1.0], [0.0, 0.0, 0.0]]), delimiter=",")
    res = run_flowctl(["sample", f"run={run}", f"observed={obs}", "n=30"], tmp_path)
    assert res.returncode == 0, res.stderr
    with h5py.File(run / "posterior_samples.h5") as f:
        assert f["samples"].shape == (2, 30, 2) and f["observed"].shape == (2, 3)
    res = run_flowctl(["evaluate", f"run={run}", "eval.plots=false"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "expected coverage" in res.stdout and "KL(p||q)" in res.stdout


@pytest.mark.slow
def test_linear_gaussian_coverage_and_kl(tmp_path: Path) -> None:
    """The shipped config: coverage within ±0.03 of nominal at 68/95 %, small KL."""
    run = tmp_path / "run"
    res = run_flowctl(["train", "config=posterior_gaussian", f"run_dir={run}"], tmp_path,
                      timeout=900)
    assert res.returncode == 0, res.stderr
    res = run_flowctl(["evaluate", f"run={run}"], tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    for k in ("68", "95"):
        assert abs(ev["coverage"][k]["coverage"] - ev["coverage"][k]["nominal"]) < 0.03
    assert ev["kl"] < 0.05
