"""trainer.keep_best: the weights of the N best epochs survive in checkpoints/top/."""

from __future__ import annotations

import json

import torch
from _common import cfg, make_data, make_model, mse

from flowctl.training import top_checkpoints, train


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_keeps_exactly_the_k_lowest_val_epochs(tmp_path):
    torch.set_num_threads(1)
    model = make_model(dropout=0.0)
    # lr large enough that the val loss is not monotone, so "best k" differs from "last k"
    summary = train(model, mse, make_data(128), make_data(64, seed=7),
                    cfg(epochs=8, lr=0.3, keep_best=3), tmp_path)
    hist = _history(tmp_path)
    expect = sorted(hist, key=lambda r: r["val_loss"])[:3]
    top = top_checkpoints(tmp_path)
    assert [t["epoch"] for t in top] == [r["epoch"] for r in expect]
    assert summary["top_epochs"] == [r["epoch"] for r in expect]
    assert len(list((tmp_path / "checkpoints" / "top").glob("*.pt"))) == 3
    # the best snapshot is the best checkpoint's model
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=False)
    for k, v in best["model"].items():
        assert torch.equal(v, top[0]["model"][k])
    # a snapshot reproduces its epoch's val loss
    m = make_model(dropout=0.0)
    m.load_state_dict(top[1]["model"])
    x, y = make_data(64, seed=7).tensors
    with torch.no_grad():
        assert abs(float(mse(m, (x, y))) - top[1]["loss"]) < 1e-5


def test_resume_keeps_the_list(tmp_path):
    torch.set_num_threads(1)
    train(make_model(dropout=0.0), mse, make_data(128), make_data(64, seed=7),
          cfg(epochs=4, lr=0.3, keep_best=2), tmp_path)
    train(make_model(dropout=0.0), mse, make_data(128), make_data(64, seed=7),
          cfg(epochs=8, lr=0.3, keep_best=2, resume=True), tmp_path)
    hist = _history(tmp_path)
    assert len(hist) == 8
    expect = [r["epoch"] for r in sorted(hist, key=lambda r: r["val_loss"])[:2]]
    assert [t["epoch"] for t in top_checkpoints(tmp_path)] == expect


def test_off_by_default(tmp_path):
    train(make_model(), mse, make_data(64), make_data(32, seed=7), cfg(epochs=2), tmp_path)
    assert top_checkpoints(tmp_path) == []
    assert not (tmp_path / "checkpoints" / "top").exists()
