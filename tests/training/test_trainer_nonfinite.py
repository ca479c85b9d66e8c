"""Non-finite losses/gradients are skipped, counted, restored from, and finally fatal."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _common import cfg, make_data, make_model, mse

from flowctl.training import TrainingError, train


def _nan_on(batches: set[int]):
    calls = {"n": 0}

    def loss_fn(model, batch):
        loss = mse(model, batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] in batches:
                return loss * float("nan")
        return loss

    return loss_fn


def _finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_isolated_nan_batches_are_skipped_and_counted(tmp_path):
    model = make_model()
    s = train(model, _nan_on({2, 3, 11}), make_data(), make_data(32), cfg(epochs=2), tmp_path)
    assert _finite(model)
    assert s["skipped_batches"] == 3 and s["restores"] == 0 and s["steps"] == 16 - 3
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_batches"] for r in lines] == [2, 3]
    assert [r["epoch_skipped_batches"] for r in lines] == [2, 1]
    assert all(math.isfinite(r["train_loss"]) for r in lines)


def test_nonfinite_gradient_with_finite_loss_is_skipped(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        loss = mse(model, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            w = model[0].weight
            loss = loss + torch.sqrt(w - w.detach()).sum()  # value 0, gradient inf
        return loss

    model = make_model()
    s = train(model, loss_fn, make_data(), None, cfg(epochs=1), tmp_path)
    assert s["skipped_batches"] == 1 and _finite(model)


def test_consecutive_nan_restores_last_good_state_and_halves_lr(tmp_path):
    # epoch 1 good; in epoch 2 batches 9..11 are NaN (max_consecutive=3) → one restore
    model = make_model()
    c = cfg(epochs=3, nonfinite={"max_consecutive": 3, "max_restores": 2})
    s = train(model, _nan_on({9, 10, 11}), make_data(), None, c, tmp_path)
    assert s["restores"] == 1 and s["skipped_batches"] == 3 and _finite(model)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in lines] == [1e-2, 5e-3, 5e-3]
    assert [r["restores"] for r in lines] == [0, 1, 1]


def test_persistent_nan_raises_training_diverged(tmp_path, capsys):
    model = make_model()
    c = cfg(epochs=5, nonfinite={"max_consecutive": 2, "max_restores": 2})
    with pytest.raises(TrainingError, match="training diverged") as info:
        train(model, _nan_on(set(range(5, 1000))), make_data(), None, c, tmp_path)
    assert "\n" not in str(info.value)
    assert _finite(model)
    assert capsys.readouterr().err.count("restored last good state") == 2
