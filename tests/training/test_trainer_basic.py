"""Training loop basics: outputs, seeds, stopping rules, clipping, validation, devices."""

from __future__ import annotations

import json
import signal
import warnings

import pytest
import torch
import torch.optim.optimizer as optim_mod
from _common import cfg, make_data, make_model, mse, same_weights
from torch.utils.data import TensorDataset

from flowctl.training import (
    CHECKPOINT_FORMAT_VERSION,
    TrainingError,
    load_checkpoint,
    resolve_device,
    train,
)


def test_train_writes_checkpoints_metrics_and_summary(tmp_path):
    model = make_model()
    data, val = make_data(256), make_data(64, seed=7)
    run_cfg = {"app": "test", "trainer": cfg(epochs=3)}
    s = train(model, mse, data, val, cfg(epochs=3), tmp_path, run_config=run_cfg)
    assert s["epochs"] == 3 and s["steps"] == 3 * 8 and s["stopped_reason"] == "epochs"
    assert s["skipped_batches"] == 0 and s["restores"] == 0 and s["wall_s"] > 0
    assert s["best_val_loss"] == pytest.approx(min(s["best_val_loss"], s["val_loss"]))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for key in ("step", "train_loss", "val_loss", "lr", "wall_s", "skipped_batches", "restores"):
        assert key in lines[0]
    assert lines[-1]["val_loss"] < lines[0]["val_loss"] < lines[0]["train_loss"] * 10
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    # checkpoints: plain content readable with weights_only=True
    for name in ("last.pt", "best.pt"):
        raw = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and last["step"] == 24 and last["config"] == run_cfg
    assert len(last["history"]) == 3 and set(last) >= {
        "model", "optimizer", "scheduler", "rng", "best_val_loss", "counters", "sample_in_epoch"}
    fresh = make_model(seed=5)
    fresh.load_state_dict(last["model"])
    assert same_weights(fresh, model)
    assert load_checkpoint(tmp_path)["epoch"] == s["best_epoch"]  # run dir → best.pt
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    data = make_data()
    a, b, c = make_model(), make_model(), make_model()
    train(a, mse, data, None, cfg(seed=3), tmp_path / "a")
    train(b, mse, data, None, cfg(seed=3), tmp_path / "b")
    train(c, mse, data, None, cfg(seed=4), tmp_path / "c")
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_max_steps_stops_exactly(tmp_path):
    s = train(make_model(), mse, make_data(), None, cfg(epochs=None, max_steps=11), tmp_path)
    assert s["steps"] == 11 and s["stopped_reason"] == "max_steps"
    s = train(make_model(), mse, make_data(), None, cfg(epochs=1, max_steps=100), tmp_path / "b")
    assert s["steps"] == 8 and s["stopped_reason"] == "epochs"


def test_early_stopping_and_best_checkpoint(tmp_path):
    state = {"val_calls": 0}

    def loss_fn(model, batch):
        if not model.training:  # val loss gets worse every epoch after the first
            state["val_calls"] += 1
            return mse(model, batch) * 0 + float(state["val_calls"])
        return mse(model, batch)

    val = make_data(32, seed=1)  # one val batch per epoch
    s = train(make_model(), loss_fn, make_data(), val, cfg(epochs=20, patience=2), tmp_path)
    assert s["stopped_reason"] == "early_stopping"
    assert s["epochs"] == 3 and s["best_epoch"] == 1 and s["best_val_loss"] == 1.0
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == 1 and best["best_val_loss"] == 1.0
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3


def test_validation_is_weighted_by_batch_size(tmp_path):
    x = torch.arange(10, dtype=torch.float32).unsqueeze(1) ** 2  # batches of 4, 4, 2
    model = torch.nn.Linear(1, 1)

    def loss_fn(m, batch):
        return batch[0].mean() + 0.0 * m.weight.sum()

    s = train(model, loss_fn, TensorDataset(x), TensorDataset(x),
              cfg(epochs=1, batch_size=4), tmp_path)
    assert s["val_loss"] == pytest.approx(x.mean().item())


def test_gradient_clipping_bounds_the_norm(tmp_path):
    norms = []

    def hook(opt, args, kwargs):
        g = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.cat([x.flatten() for x in g])).item())

    handle = optim_mod.register_optimizer_step_pre_hook(hook)
    try:
        def big(m, b):
            return mse(m, b) * 1e4

        train(make_model(), big, make_data(), None, cfg(epochs=1, grad_clip=0.5), tmp_path)
    finally:
        handle.remove()
    assert len(norms) == 8 and max(norms) <= 0.5 * (1 + 1e-5)


def test_signal_handlers_restored_and_items_may_be_bare_tensors(tmp_path):
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    x = torch.randn(40, 2)

    class Bare(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return x[i]

    model = torch.nn.Linear(2, 2)
    train(model, lambda m, b: (m(b[0]) ** 2).mean(), Bare(), None, cfg(epochs=1), tmp_path)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_resolve_device_and_bf16_on_cpu(tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        train(make_model(), mse, make_data(64), None, cfg(epochs=1, bf16=True), tmp_path)
    assert any("bf16" in str(w.message) for w in rec)


def test_plain_progress_lines_on_non_tty(tmp_path, capsys):
    train(make_model(), mse, make_data(), make_data(32), cfg(epochs=2, log_every=4), tmp_path)
    err = capsys.readouterr().err
    assert "step 4: loss" in err and "epoch 1: train" in err and "epoch 2: train" in err
    assert "training done (epochs)" in err


def test_bad_loss_shape_and_empty_model(tmp_path):
    with pytest.raises(TrainingError, match="scalar"):
        train(make_model(), lambda m, b: (m(b[0]) - b[1]) ** 2, make_data(64), None, cfg(),
              tmp_path)
    frozen = make_model()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(TrainingError, match="no trainable"):
        train(frozen, mse, make_data(64), None, cfg(), tmp_path / "b")


def test_batched_fast_path_matches_per_item_loading(tmp_path):
    data = make_data()

    class PerItem(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i]

    a, b, c = make_model(), make_model(), make_model()
    train(a, mse, data, data, cfg(batch_size=48), tmp_path / "a")
    train(b, mse, PerItem(), PerItem(), cfg(batch_size=48), tmp_path / "b")
    sub = torch.utils.data.Subset(data, list(range(len(data))))
    train(c, mse, sub, sub, cfg(batch_size=48), tmp_path / "c")
    assert same_weights(a, b) and same_weights(a, c)
