"""Progress reporting to stderr: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Per-batch and per-epoch progress; silent when ``enabled`` is false (ranks > 0).

    On a TTY a tqdm bar shows loss, lr and it/s; otherwise a line every ``log_every`` optimizer
    steps and one line per epoch are written to ``stream`` (default ``sys.stderr``).
    """

    def __init__(self, enabled: bool, log_every: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.log_every = log_every
        self.use_bar = enabled and _isatty(self.stream)
        self._bar: Any = None
        self._t_last = time.perf_counter()
        self._steps_last = 0
        self._desc = ""

    def message(self, text: str) -> None:
        """One line to the stream (above the bar if one is shown)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start_epoch(self, desc: str, total: int, done: int, step: int) -> None:
        """Begin an epoch of ``total`` batches of which ``done`` are already behind us."""
        self._desc = desc
        self._t_last = time.perf_counter()
        self._steps_last = step
        if self.use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=desc, file=self.stream,
                             leave=False, dynamic_ncols=True, unit="it")

    def update(self, step: int, loss: float, lr: float) -> None:
        """After each batch: ``step`` is the global optimizer-step count."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", refresh=False)
            return
        if step > 0 and step % self.log_every == 0 and step != self._steps_last:
            now = time.perf_counter()
            rate = (step - self._steps_last) / max(now - self._t_last, 1e-9)
            self._t_last, self._steps_last = now, step
            self.message(f"{self._desc} step {step}: loss {loss:.5g} lr {lr:.3g} {rate:.1f} it/s")

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.end_epoch()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
