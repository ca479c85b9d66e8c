"""CUDA-only checks (skipped without a GPU): auto device, bf16 autocast, exact resume on GPU."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from _common import cfg, make_data, make_model, mse, same_weights

from flowctl.training import TrainingInterrupted, load_checkpoint, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_device_bf16_and_cpu_loadable_checkpoint(tmp_path):
    model = make_model()
    s = train(model, mse, make_data(), make_data(48, seed=9),
              cfg(device="auto", bf16=True, epochs=3), tmp_path)
    assert s["device"].startswith("cuda") and next(model.parameters()).is_cuda
    assert math.isfinite(s["val_loss"]) and s["skipped_batches"] == 0
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(v.device.type == "cpu" for v in ck["model"].values())
    assert "cuda" in ck["rng"][0]


def test_sigint_mid_epoch_resume_is_exact_on_cuda(tmp_path):
    c = cfg(device="cuda", epochs=3, schedule="cosine", warmup_steps=2)
    ref = make_model()
    train(ref, mse, make_data(), make_data(48, seed=9), c, tmp_path / "ref")
    calls = {"n": 0}

    def interrupting(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 11:
                os.kill(os.getpid(), signal.SIGINT)
        return mse(model, batch)

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(make_model(), interrupting, make_data(), make_data(48, seed=9), c, run)
    model = make_model(seed=99)
    train(model, mse, make_data(), make_data(48, seed=9), {**c, "resume": True}, run)
    assert same_weights(model, ref)
