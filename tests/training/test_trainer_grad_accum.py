"""trainer.grad_accum: K batches per optimizer step (CaloFlow v2's student schedule)."""

from __future__ import annotations

import json

import pytest
import torch
from _common import cfg, make_data, make_model, mse

from flowctl.training import ConfigError, check_values, load_checkpoint, train, validate_config
from flowctl.training.config import accum_at


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("n", [96, 100])  # 100: the epoch's last group is short (2 batches)
def test_accumulated_steps_equal_big_batch_steps(tmp_path, n):
    """K batches of b rows with grad_accum K take the same steps as batches of K*b rows (same
    row order, mean loss, no dropout), also for the epoch's shorter last group."""
    data = make_data(n)
    a, b = make_model(dropout=0.0), make_model(dropout=0.0)
    sa = train(a, mse, data, None, cfg(batch_size=8, grad_accum=3, epochs=2), tmp_path / "a")
    sb = train(b, mse, data, None, cfg(batch_size=24, epochs=2), tmp_path / "b")
    assert sa["steps"] == sb["steps"] == 2 * -(-n // 24)
    torch.testing.assert_close(_weights(a), _weights(b), rtol=1e-5, atol=1e-6)
    assert sa["train_loss"] == pytest.approx(sb["train_loss"], rel=1e-5)
    # and it is not the same as stepping after every small batch
    c = make_model(dropout=0.0)
    train(c, mse, data, None, cfg(batch_size=8, epochs=2), tmp_path / "c")
    assert (_weights(c) - _weights(a)).abs().max() > 1e-3


def test_schedule_by_epoch_and_lr_clock_counts_batches(tmp_path):
    """[[0, 1], [2, 4]]: 1 batch per step in epochs 1-2, 4 from epoch 3; step milestones are
    positions in batches, so a milestone at 2 epochs of batches halves the lr from epoch 3."""
    data = make_data(256)  # 8 batches of 32 per epoch
    tr = cfg(epochs=4, grad_accum=[[0, 1], [2, 4]], schedule="step", milestones=[16], gamma=0.5)
    s = train(make_model(), mse, data, make_data(64, seed=7), tr, tmp_path)
    rec = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rec] == [8, 16, 18, 20] and s["steps"] == 20
    assert [r["lr"] for r in rec] == [1e-2, 1e-2, 5e-3, 5e-3]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["batches"] == 32


def test_resume_with_accumulation_matches_uninterrupted(tmp_path):
    data, val = make_data(200), make_data(64, seed=7)
    tr = cfg(epochs=4, grad_accum=[[0, 2], [2, 3]], schedule="step", milestones=[10], gamma=0.5)
    full = make_model()
    train(full, mse, data, val, tr, tmp_path / "full")
    part = make_model()
    train(part, mse, data, val, {**tr, "epochs": 3}, tmp_path / "part")
    resumed = make_model(seed=5)
    s = train(resumed, mse, data, val, {**tr, "resume": True}, tmp_path / "part")
    assert s["resumed_from"] is not None
    assert torch.equal(_weights(full), _weights(resumed))


def test_max_steps_with_accumulation(tmp_path):
    s = train(make_model(), mse, make_data(256), None,
              cfg(epochs=None, max_steps=5, grad_accum=3), tmp_path)
    assert s["steps"] == 5 and s["stopped_reason"] == "max_steps"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", [], [[1, 2]], [[0, 2], [0, 4]],
                                 [[0, 2], [5, 0]], [[0, 2, 3]], [2, 4]])
def test_bad_grad_accum_is_named(bad):
    with pytest.raises(ConfigError, match="trainer.grad_accum"):
        validate_config({"grad_accum": bad})
    with pytest.raises(ConfigError, match="student.trainer.grad_accum"):
        check_values({"grad_accum": bad}, prefix="student.trainer")


def test_accum_at():
    spec = validate_config({"grad_accum": [[0, 2], [10, 4], [40, 8], [70, 16]]})["grad_accum"]
    assert [accum_at(spec, e) for e in (0, 9, 10, 39, 40, 69, 70, 99)] == [2, 2, 4, 4, 8, 8,
                                                                           16, 16]
    assert accum_at(validate_config({})["grad_accum"], 3) == 1
