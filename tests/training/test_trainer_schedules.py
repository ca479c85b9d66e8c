"""Learning-rate schedules: values at chosen steps, and what the trainer actually applies."""

from __future__ import annotations

import json
import math

import pytest
import torch.optim.optimizer as optim_mod
from _common import cfg, make_data, make_model, mse

from flowctl.training import train
from flowctl.training.schedules import LRSchedule


def test_constant_with_warmup():
    s = LRSchedule("constant", 1e-3, 100, warmup_steps=4)
    assert [s.lr_at(i) for i in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert s.lr_at(10_000) == 1e-3


def test_cosine_with_warmup_and_floor():
    s = LRSchedule("cosine", 1.0, 110, warmup_steps=10, min_lr=0.1)
    assert s.lr_at(0) == pytest.approx(0.1) and s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(60) == pytest.approx(0.55)  # half-way: (1 + 0.1) / 2
    assert s.lr_at(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.lr_at(110) == pytest.approx(0.1) and s.lr_at(500) == pytest.approx(0.1)


def test_step_schedule():
    s = LRSchedule("step", 1.0, 100, milestones=[3, 6], gamma=0.5, min_lr=0.3)
    assert [s.lr_at(i) for i in (0, 2, 3, 5, 6, 50)] == pytest.approx([1, 1, 0.5, 0.5, 0.3, 0.3])
    w = LRSchedule("step", 1.0, 100, milestones=[3], gamma=0.1, warmup_steps=2)
    assert [w.lr_at(i) for i in range(5)] == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1])


def test_onecycle():
    s = LRSchedule("onecycle", 1.0, 100, min_lr=0.0)
    assert s.lr_at(0) == pytest.approx(1 / 25)
    assert s.lr_at(15) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)
    assert s.lr_at(30) == pytest.approx(1.0)
    assert s.lr_at(65) == pytest.approx(0.5)
    assert s.lr_at(100) == pytest.approx(0.0, abs=1e-12)
    assert max(s.lr_at(i) for i in range(100)) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["constant", "cosine", "onecycle", "step"])
def test_trainer_applies_schedule_per_step(tmp_path, kind):
    lrs: list[float] = []
    handle = optim_mod.register_optimizer_step_pre_hook(
        lambda opt, a, k: lrs.append(opt.param_groups[0]["lr"]))
    c = cfg(epochs=2, schedule=kind, lr=0.1, warmup_steps=3, milestones=[5, 12], gamma=0.5,
            min_lr=1e-3)
    try:
        train(make_model(), mse, make_data(), None, c, tmp_path)
    finally:
        handle.remove()
    ref = LRSchedule(kind, 0.1, 16, warmup_steps=3, milestones=[5, 12], gamma=0.5, min_lr=1e-3)
    assert lrs == pytest.approx([ref.lr_at(i) for i in range(16)])
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["lr"] == pytest.approx(ref.lr_at(15))
