"""Convergence by default (early stopping on a held-out part of the budget) and the sequential
mode (truncated sequential NPE) recovering a known linear-Gaussian posterior."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowctl.apps import load_app
from flowctl.apps.common import UserError
from flowctl.apps.posterior import auto_batch_size, posterior_draws, round_patience, simulate
from flowctl.simulators import LinearGaussian


def _cfg(**over: object) -> dict:
    cfg = {
        "app": "posterior", "seed": 0, "n": 64, "observed": None, "observed_key": None,
        "observed_columns": None, "prior_support": True, "batch_size": "auto",
        "flow": {"kind": "maf", "features": None, "context": None, "transforms": 2,
                 "hidden": [32, 32], "transform": "affine", "standardize": True},
        "simulator": {"kind": "linear_gaussian", "target": None, "params": {}},
        "sims": {"n_train": 600, "n_val": None, "val_fraction": 0.1, "n_test": 100, "seed": 0,
                 "rounds": 1, "truncation": 1e-3},
        "trainer": {"device": "cpu", "epochs": 400, "patience": 3, "lr": 1e-2,
                    "schedule": "constant", "log_every": 10000},
        "eval": {"n_sbc": 100, "n_post": 20, "rank_bins": 5, "plots": False,
                 "c2st_observations": 0},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg


def test_budget_split_and_auto_batch() -> None:
    _, sets = simulate(_cfg(sims={"n_train": 1000}))
    assert len(sets["train"][0]) == 900 and len(sets["val"][0]) == 100
    assert len(sets["test"][0]) == 100
    _, sets = simulate(_cfg(sims={"n_val": 50}))
    assert len(sets["train"][0]) == 600 and len(sets["val"][0]) == 50
    assert [auto_batch_size(n) for n in (900, 9000, 90000, 900000)] == [32, 128, 512, 512]
    with pytest.raises(UserError, match="val_fraction"):
        simulate(_cfg(sims={"val_fraction": 1.5}))


def test_early_stopping_stops_before_the_cap(tmp_path: Path) -> None:
    out = load_app("posterior").COMMANDS["train"](_cfg(), tmp_path / "run")
    assert out["stopped_reason"] == "early_stopping"
    assert out["epochs"] < 400 and out["epochs"] == out["best_epoch"] + 3
    assert out["batch_size"] == 32 and out["n_simulations"] == 600
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]
    assert saved["stopped_reason"] == "early_stopping"


def test_sequential_recovers_the_linear_gaussian_posterior(tmp_path: Path) -> None:
    """Two TSNPE rounds focused on one x_o: draws match the analytic N(μ(x_o), Σ)."""
    app = load_app("posterior")
    sim = LinearGaussian()
    x_o = np.array([[1.0, -0.5, 0.3]])
    obs = tmp_path / "obs.csv"
    np.savetxt(obs, x_o, delimiter=",")
    cfg = _cfg(observed=str(obs), sims={"n_train": 2000, "rounds": 2},
               trainer={"lr": 3e-3, "patience": 6})
    run = tmp_path / "run"
    out = app.COMMANDS["train"](cfg, run)
    assert [r["round"] for r in out["rounds"]] == [1, 2]
    # batch_size auto is re-picked each round from the pairs trained on so far (900, 1800)
    assert [r["batch_size"] for r in out["rounds"]] == [auto_batch_size(900),
                                                        auto_batch_size(1800)]
    assert 0.0 < out["rounds"][1]["acceptance"] < 1.0  # round 2 drew from a truncated prior
    assert (run / "rounds" / "1" / "checkpoints" / "best.pt").exists()
    flow = app.load_flow(cfg, run)
    draws, _ = posterior_draws(flow, cfg, sim, x_o, 4000)
    mu, sd = sim.posterior_mean(x_o)[0], np.sqrt(np.diag(sim.cov))
    assert np.all(np.abs(draws[0].mean(0) - mu) < 0.3 * sd)
    assert np.all(np.abs(draws[0].std(0) / sd - 1) < 0.2)
    # sample and evaluate default to the run's observation; C2ST is measured there
    s = app.COMMANDS["sample"]({**cfg, "observed": None}, run)
    assert s["n_observations"] == 1 and "sequential" in s["observed"]
    ev = app.COMMANDS["evaluate"]({**cfg, "observed": None,
                                   "eval": {**cfg["eval"], "c2st_observations": 1,
                                            "c2st_draws": 1000, "c2st_max_epochs": 30}}, run)
    assert ev["c2st"]["n_observations"] == 1 and ev["c2st"]["c2st"] < 0.65
    assert "note" in ev and 0.0 <= ev["tarp"]["max_deviation"] <= 1.0
    with pytest.raises(UserError, match="separate prior"):
        app.COMMANDS["train"](_cfg(simulator={"target": "tests.posterior.usersim_posterior:"
                                              "shifted"}, sims={"rounds": 2}), tmp_path / "u")


def test_round_patience_applies_to_the_rounds_before_the_last(tmp_path: Path) -> None:
    """sims.round_patience stops rounds 1..R-1 sooner; the last round keeps trainer.patience."""
    obs = tmp_path / "obs.csv"
    np.savetxt(obs, np.array([[0.5, 0.2, -0.1]]), delimiter=",")
    cfg = _cfg(observed=str(obs), sims={"n_train": 900, "rounds": 3, "round_patience": 1},
               trainer={"patience": 4})
    out = load_app("posterior").COMMANDS["train"](cfg, tmp_path / "run")
    rounds = out["rounds"]
    assert [r["patience"] for r in rounds] == [1, 1, 4]
    for r in rounds:
        assert r["epochs"] == r["best_epoch"] + r["patience"]
        assert r["steps"] > 0 and r["wall_s"] >= r["proposal_s"] >= 0.0
    # auto: ~600 optimizer steps, within [10, patience]: full patience at 10^3 sims in 5
    # rounds (180 pairs in batches of 32: 6 steps per epoch), 11 at 10^4 (1800 pairs: 57)
    assert [round_patience("auto", 20, n, 32) for n in (180, 1800, 18000)] == [20, 11, 10]
    assert round_patience(7, 20, 180, 32) == 7 and round_patience("auto", None, 180, 32) is None
    with pytest.raises(UserError, match="round_patience"):
        load_app("posterior").COMMANDS["train"](
            _cfg(observed=str(obs), sims={"rounds": 2, "round_patience": 0}), tmp_path / "bad")


def test_refine_continues_the_last_round_at_a_lower_lr(tmp_path: Path) -> None:
    """sims.refine: the last round goes to rounds/R, then a fit at lr × factor from its best
    weights is the run's; its val NLL is no worse than the last round's best."""
    obs = tmp_path / "obs.csv"
    np.savetxt(obs, np.array([[0.5, 0.2, -0.1]]), delimiter=",")
    cfg = _cfg(observed=str(obs), sims={"n_train": 900, "rounds": 2, "round_patience": 2,
                                        "refine": 0.1}, trainer={"patience": 3})
    run = tmp_path / "run"
    out = load_app("posterior").COMMANDS["train"](cfg, run)
    ref, last = out["refine"], out["rounds"][-1]
    assert ref["lr"] == pytest.approx(1e-3) and ref["lr_factor"] == 0.1
    assert ref["steps"] > 0 and ref["stopped_reason"] == "early_stopping"
    assert (run / "rounds" / "2" / "checkpoints" / "best.pt").exists()
    assert (run / "checkpoints" / "best.pt").exists()
    # the refine's first epoch starts from the last round's best weights
    assert out["best_val_nll"] <= last["best_val_nll"] + 0.05
    saved = json.loads((run / "metrics.json").read_text())["train"]
    assert saved["refine"]["steps"] == ref["steps"]
    for bad in (0, 1.5, True, "x"):
        with pytest.raises(UserError, match="sims.refine"):
            load_app("posterior").COMMANDS["train"](
                _cfg(observed=str(obs), sims={"rounds": 2, "refine": bad}), tmp_path / "bad")
