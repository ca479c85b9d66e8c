"""The one training loop for flowctl's binary classifiers (calorimeter AUC, reweighting,
CATHODE/CWoLa/idealized anomaly detection, Gaia).

Weighted binary cross-entropy from the logit (``BCEWithLogits`` times per-event weights,
mean over the batch), Adam, shuffled mini-batches; after every epoch the weighted validation
BCE (sum over rows / row count) decides which epochs are kept:

* ``top_k`` epochs with the lowest validation loss are kept (their weights, in memory), best
  first; ``top_k=1`` is "the best epoch", ``top_k=10`` CATHODE's epoch ensemble;
* ``patience``: stop after that many epochs without improving the best validation loss by
  more than ``min_delta`` (early stopping; ``None`` runs all ``epochs``).

Deterministic on CPU for a given ``seed`` (initialisation, dropout and batch order); the
global torch RNG state is restored afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from flowctl.training.optimizers import adam

__all__ = ["FitResult", "fit_classifier"]

_EVAL_BATCH = 65536


@dataclass
class FitResult:
    """What :func:`fit_classifier` kept: ``states`` (state_dicts on CPU) of ``epochs``
    (1-based), lowest validation loss first; ``history`` one row per epoch
    (``epoch, train_loss, val_loss, wall_s``); ``epochs_run`` how many epochs ran."""

    states: list[dict[str, torch.Tensor]]
    epochs: list[int]
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0

    @property
    def best_epoch(self) -> int:
        return self.epochs[0] if self.epochs else 0


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit_classifier(make_model: Callable[[], nn.Module], xt: torch.Tensor, yt: torch.Tensor,
                   wt: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, wv: torch.Tensor, *,
                   lr: float, batch_size: int, epochs: int, weight_decay: float = 0.0,
                   top_k: int = 1, patience: int | None = None, min_delta: float = 0.0,
                   seed: int = 0,
                   progress: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Train ``make_model()`` (built under ``seed``, moved to ``xt``'s device and dtype) on
    ``xt [N, F]``, labels ``yt [N]`` (0/1) and weights ``wt [N]``; validate on
    ``(xv, yv, wv)``. ``progress(row)`` is called after every epoch."""
    dev, dtype = xt.device, xt.dtype
    lossf = nn.BCEWithLogitsLoss(reduction="none")
    kept: list[tuple[float, int, dict[str, torch.Tensor]]] = []   # (val loss, epoch, state)
    history: list[dict[str, float]] = []
    best, since, epoch, n, t0 = float("inf"), 0, 0, len(xt), time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model().to(dev, dtype)
        opt = adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            tot = 0.0
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                opt.zero_grad(set_to_none=True)
                loss = (lossf(model(xt[idx]).squeeze(-1), yt[idx]) * wt[idx]).mean()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(idx)
            model.eval()
            with torch.no_grad():
                vsum = sum(float((lossf(model(xv[i:i + _EVAL_BATCH]).squeeze(-1),
                                        yv[i:i + _EVAL_BATCH]) * wv[i:i + _EVAL_BATCH]).sum())
                           for i in range(0, len(xv), _EVAL_BATCH))
            vl = vsum / max(len(xv), 1)
            row = {"epoch": epoch, "train_loss": tot / n, "val_loss": vl,
                   "wall_s": time.perf_counter() - t0}
            history.append(row)
            if progress is not None:
                progress(row)
            if len(kept) < top_k or vl < kept[-1][0]:
                kept.append((vl, epoch, _state_copy(model)))
                kept.sort(key=lambda t: (t[0], t[1]))
                del kept[top_k:]
            if vl < best - min_delta:
                best, since = vl, 0
            else:
                since += 1
                if patience is not None and since >= patience:
                    break
    return FitResult(states=[s for _, _, s in kept], epochs=[e for _, e, _ in kept],
                     history=history, epochs_run=epoch)
