"""The quickstart with the new flow families, end to end through the `flowctl` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
