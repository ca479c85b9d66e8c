"""The density application in-process: table data, features from data, sample/evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.apps import load_app
from flowctl.apps.common import UserError
from flowctl.apps.density import load_data


def _cfg(path: Path) -> dict:
    return {
        "app": "density", "seed": 0, "n": 64,
        "flow": {"kind": "coupling", "features": None, "transforms": 2, "hidden": [8],
                 "transform": "affine", "standardize": True},
        "data": {"kind": "table", "path": str(path), "key": None, "columns": [0, 2],
                 "delimiter": None, "split": [0.6, 0.2, 0.2], "seed": 0},
        "trainer": {"device": "cpu", "epochs": 2, "batch_size": 32, "schedule": "constant",
                    "log_every": 100},
        "eval": {"n_kl": 100, "n_plot": 100, "grid": 20, "plots": True},
    }


def test_table_train_sample_evaluate(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["events"] = x
    app = load_app("density")
    cfg = _cfg(tmp_path / "t.h5")
    run = tmp_path / "run"
    out = app.COMMANDS["train"](cfg, run)
    assert out["dim"] == 2 and out["n_train"] == 120
    assert cfg["flow"]["features"] == 2  # filled from the data and stored in config.yaml
    assert "features: 2" in (run / "config.yaml").read_text()
    s = app.COMMANDS["sample"](cfg, run)
    assert s["n"] == 64
    ev = app.COMMANDS["evaluate"](cfg, run)
    assert ev["n_test"] == 40 and "kl" not in ev and np.isfinite(ev["test_nll"])
    assert (run / "plots" / "samples.png").exists() and (run / "plots" / "density.png").exists()
    m = json.loads((run / "metrics.json").read_text())
    assert {"train", "sample", "evaluate"} <= set(m)


def test_load_data_errors() -> None:
    with pytest.raises(UserError, match="data.path"):
        load_data({"kind": "table", "path": None})
    with pytest.raises(UserError, match="unknown data.kind"):
        load_data({"kind": "spiral"})
    d = load_data({"kind": "gmm", "params": {"dim": 3}, "n_train": 10, "n_val": 5,
                   "n_test": 5, "seed": 1})
    assert d.dim == 3 and d.truth is not None and d.truth.exact


def test_unknown_app() -> None:
    with pytest.raises(UserError, match="available apps: density"):
        load_app("calorimeter")
