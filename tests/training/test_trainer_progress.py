"""Progress output: tqdm bar on a terminal, plain lines otherwise, silence on other ranks."""

from __future__ import annotations

import io

from flowctl.training.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_tty_shows_loss_and_lr():
    out = FakeTTY()
    p = Progress(enabled=True, log_every=1, stream=out)
    assert p.use_bar
    p.start_epoch("epoch 1/2", total=4, done=1, step=1)
    for step in (2, 3, 4):
        p.update(step, loss=1.5, lr=1e-3)
    p.message("epoch 1: train 1.5")
    p.end_epoch()
    text = out.getvalue()
    assert "epoch 1/2" in text and "loss=1.5" in text and "lr=0.001" in text
    assert "epoch 1: train 1.5" in text


def test_plain_lines_every_log_every_steps_and_silent_when_disabled():
    out = io.StringIO()
    p = Progress(enabled=True, log_every=2, stream=out)
    assert not p.use_bar
    p.start_epoch("epoch 1", total=4, done=0, step=0)
    for step in (1, 2, 2, 3, 4):  # a skipped batch repeats a step: no duplicate line
        p.update(step, loss=2.0, lr=0.1)
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1 step 2", "epoch 1 step 4"]
    assert "it/s" in lines[0]
    q = Progress(enabled=False, log_every=1, stream=FakeTTY())
    q.start_epoch("e", total=2, done=0, step=0)
    q.update(1, 1.0, 1.0)
    q.message("hidden")
    assert q.stream.getvalue() == ""
