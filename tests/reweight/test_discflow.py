"""DiscFlow: the weighted loss, its schedule, and the app on a tiny toy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowctl.apps import load_app
from flowctl.apps.common import UserError
from flowctl.apps.discflow import DiscFlowModel
from flowctl.flows import build


def _model(mode: str = "discflow") -> DiscFlowModel:
    flow = build({"kind": "coupling", "features": 2, "transforms": 2, "hidden": [8],
                  "transform": "affine"})
    return DiscFlowModel(flow, 2, np.zeros(2), np.ones(2), mode, (8,), strength=2.0,
                         start_steps=1, ramp_steps=2)


def test_loss_schedule_and_eval_nll() -> None:
    torch.manual_seed(0)
    m = _model()
    x = torch.randn(64, 2)
    m.train()
    assert m.alpha() == 0.0
    for _ in range(4):
        loss = m.loss(x)
        loss.backward()
    assert m.alpha() == 2.0 and int(m.step) == 4
    assert all(p.grad is not None for p in m.disc.parameters())
    m.eval()
    with torch.no_grad():
        assert float(m.loss(x)) == pytest.approx(float(-m.flow.log_prob(x).mean()))
    with pytest.raises(ValueError, match="trainer.loss"):
        _model("gan")


def _cfg(loss: str) -> dict:
    return {"app": "discflow", "seed": 0,
            "flow": {"kind": "coupling", "features": None, "transforms": 2, "hidden": [8],
                     "transform": "affine"},
            "data": {"kind": "ring", "n_train": 256, "n_val": 64, "n_test": 200, "seed": 0},
            "trainer": {"loss": loss, "device": "cpu", "epochs": 2, "batch_size": 64,
                        "schedule": "constant", "log_every": 100},
            "discflow": {"hidden": [8], "strength": 1.0, "start_steps": 2, "ramp_steps": 2},
            "classifier": {"hidden": [8], "epochs": 2, "bootstrap": 5},
            "eval": {"checkpoint": "last"}}


def test_app_train_evaluate(tmp_path: Path) -> None:
    app = load_app("discflow")
    out = app.COMMANDS["train"](_cfg("discflow"), tmp_path / "d")
    assert out["loss"] == "discflow" and out["final_alpha"] == 1.0
    ev = app.COMMANDS["evaluate"](_cfg("discflow"), tmp_path / "d")
    assert 0.0 <= ev["auc"] <= 1.0 and np.isfinite(ev["test_nll"])
    with pytest.raises(UserError, match="trainer.loss"):
        app.COMMANDS["train"](_cfg("bogus"), tmp_path / "b")
