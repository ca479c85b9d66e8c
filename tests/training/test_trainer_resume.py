"""Exact resume: interrupted runs continue bit-identically on CPU (in-process)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from _common import cfg, make_data, make_model, mse, same_weights

from flowctl.training import TrainingError, TrainingInterrupted, load_checkpoint, train

# cosine over a known total and warm-up, dropout in the model: schedule + RNG must be restored
BASE = {"schedule": "cosine", "warmup_steps": 3, "epochs": 4}


def _straight(tmp_path, **over):
    model = make_model()
    s = train(model, mse, make_data(), make_data(48, seed=9), cfg(**{**BASE, **over}),
              tmp_path / "straight")
    return model, s


def test_two_epochs_then_resume_to_four_is_bit_identical(tmp_path):
    """Run 2 epochs, then resume for 4 total == 4 straight.

    A step schedule does not depend on the total length (cosine does, so a first leg with
    epochs=2 would be a different run; the signal tests below cover cosine).
    """
    over = {"schedule": "step", "milestones": [10, 20], "gamma": 0.5, "warmup_steps": 2}
    ref, ref_s = _straight(tmp_path, **over)
    run = tmp_path / "run"
    train(make_model(), mse, make_data(), make_data(48, seed=9), cfg(**{**BASE, **over, "epochs": 2}),
          run)
    model = make_model(seed=99)
    s = train(model, mse, make_data(), make_data(48, seed=9),
              cfg(**{**BASE, **over, "resume": True}), run)
    assert same_weights(model, ref)
    assert s["resumed_from"] is not None
    assert s["best_val_loss"] == ref_s["best_val_loss"] and s["steps"] == ref_s["steps"]
    ref_lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    got = (run / "metrics.jsonl").read_text().splitlines()
    strip = ("wall_s", "epoch_s")
    assert [{k: v for k, v in json.loads(x).items() if k not in strip} for x in got] == [
        {k: v for k, v in json.loads(x).items() if k not in strip} for x in ref_lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 4-epoch cosine run the signal tests are compared with."""
    return _straight(tmp_path_factory.mktemp("ref"))[0]


def test_sigint_mid_epoch_then_resume_is_bit_identical(tmp_path, reference):
    ref = reference
    calls = {"n": 0}

    def interrupting(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 13:  # inside epoch 2 (8 batches per epoch)
                os.kill(os.getpid(), signal.SIGINT)
        return mse(model, batch)

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        train(make_model(), interrupting, make_data(), make_data(48, seed=9), cfg(**BASE), run)
    assert info.value.exit_code == 130 and "resume" in str(info.value)
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1 and ck["step"] == 13 and ck["sample_in_epoch"] == 5 * 32
    model = make_model(seed=99)
    train(model, mse, make_data(), make_data(48, seed=9), cfg(**BASE, resume=True), run)
    assert same_weights(model, ref)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


def test_sigterm_after_last_batch_resumes_into_validation(tmp_path, reference):
    ref = reference
    calls = {"n": 0}

    def interrupting(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 8:  # last batch of epoch 1: checkpoint before its validation
                os.kill(os.getpid(), signal.SIGTERM)
        return mse(model, batch)

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        train(make_model(), interrupting, make_data(), make_data(48, seed=9), cfg(**BASE), run)
    assert info.value.exit_code == 143
    model = make_model(seed=99)
    train(model, mse, make_data(), make_data(48, seed=9), cfg(**BASE, resume=True), run)
    assert same_weights(model, ref)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2, 3, 4]


def test_max_steps_mid_epoch_then_resume_continues_the_epoch(tmp_path):
    over = {"schedule": "constant", "warmup_steps": 4, "epochs": 3}
    ref = make_model()
    train(ref, mse, make_data(), None, cfg(**over), tmp_path / "ref")
    run = tmp_path / "run"
    s = train(make_model(), mse, make_data(), None, cfg(**over, max_steps=5), run)
    assert s["steps"] == 5 and s["stopped_reason"] == "max_steps"
    model = make_model(seed=99)
    s = train(model, mse, make_data(), None, cfg(**over, resume=True), run)
    assert s["steps"] == 24 and same_weights(model, ref)


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys):
    s = train(make_model(), mse, make_data(64), None, cfg(resume=True), tmp_path)
    assert s["resumed_from"] is None and s["epochs"] == 2
    assert "starting fresh" in capsys.readouterr().err


def test_resume_with_other_model_is_a_clear_error(tmp_path):
    train(make_model(), mse, make_data(64), None, cfg(epochs=1), tmp_path)
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with pytest.raises(TrainingError, match="cannot resume"):
        train(other, mse, make_data(64), None, cfg(epochs=2, resume=True), tmp_path)
