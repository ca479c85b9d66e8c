"""Atomic checkpoint writes and loading."""

from __future__ import annotations

import pytest
import torch

from flowctl.training import CHECKPOINT_FORMAT_VERSION, TrainingError, load_checkpoint
from flowctl.training.checkpoint import get_rng_state, save_checkpoint, set_rng_state


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"format_version": CHECKPOINT_FORMAT_VERSION, "step": 1}, path)

    def broken_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"format_version": CHECKPOINT_FORMAT_VERSION, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp left behind


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(TrainingError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(TrainingError, match="no checkpoint in run directory"):
        load_checkpoint(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(TrainingError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="not a flowctl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    import random

    import numpy as np

    save_checkpoint({"format_version": 1, "rng": get_rng_state()}, tmp_path / "r.pt")
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
