"""The quickstart with the new flow families, end to end through the `flowctl` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import run_flowctl


def test_quickstart_cnf_flow_matching_train_and_sample(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = run_flowctl(["train", "config=quickstart_tiny", "flow=cnf", "flow.hidden=[16,16]",
                       f"run_dir={run}"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "trained by flow_matching" in res.stdout
    train = json.loads((run / "metrics.json").read_text())["train"]
    assert train["loss"] == "flow_matching"
    assert math.isfinite(train["best_val_nll"]) and math.isfinite(train["best_val_loss"])
    res = run_flowctl(["sample", f"run={run}", "n=200"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "200 samples" in res.stdout


def test_flow_matching_loss_needs_a_cnf(tmp_path: Path) -> None:
    res = run_flowctl(["train", "config=quickstart_tiny", "+trainer.loss=flow_matching",
                       f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert res.returncode == 2
    assert "needs flow.kind=cnf" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow  # ~8 s of CPU: two training phases and an evaluate in subprocesses
def test_mflow_two_phase_training_from_the_cli(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(400, 2))
    np.save(tmp_path / "saddle.npy",
            np.c_[xy, 0.5 * (xy[:, 0] ** 2 - xy[:, 1] ** 2)].astype("float32"))
    run = tmp_path / "run"
    res = run_flowctl(["train", "config=quickstart_tiny", "flow=mflow", "data=table",
                       f"data.path={tmp_path / 'saddle.npy'}", "flow.latent_flow.hidden=[8]",
                       "trainer.epochs=1", f"run_dir={run}"], tmp_path)
    assert res.returncode == 0, res.stderr
    train = json.loads((run / "metrics.json").read_text())["train"]
    assert train["loss"] == "mflow"
    assert math.isfinite(train["manifold_best_val_reconstruction"])
    assert math.isfinite(train["best_val_nll"])
    assert (run / "manifold" / "checkpoints" / "best.pt").exists()
    res = run_flowctl(["evaluate", f"run={run}", "eval.plots=false"], tmp_path)
    assert res.returncode == 0, res.stderr
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert math.isfinite(ev["test_reconstruction_mse"]) and "kl" not in ev
