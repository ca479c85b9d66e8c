"""Classifier two-sample test (C2ST) as the SBI benchmark scores posteriors.

Lopez-Paz & Oquab (arXiv:1610.06545); the recipe of the SBI benchmark (Lueckmann et al.,
arXiv:2101.04653): both samples are z-scored with the mean and standard deviation of the
first, an MLP with two ReLU hidden layers of ``10·D`` units is trained with Adam on a
K-fold split (K=5) and the held-out accuracy, averaged over the folds, is the score.
0.5 means the classifier cannot tell the samples apart; 1.0 means they are disjoint.

The classifier mirrors scikit-learn's ``MLPClassifier`` defaults that the benchmark used
(Adam, lr 1e-3, L2 penalty 1e-4, mini-batches of 200, up to 1000 epochs, stop when the
epoch's training loss has not improved by 1e-4 for 10 epochs), written in PyTorch so that
flowctl needs no scikit-learn.

>>> rng = np.random.default_rng(0)
>>> round(c2st(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + 10.0), 2)
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["C2STConfig", "c2st", "c2st_folds", "c2st_many"]


@dataclass
class C2STConfig:
    """Classifier settings (defaults: the SBI benchmark's scikit-learn MLP)."""

    folds: int = 5
    hidden_factor: int = 10       # hidden width = hidden_factor · D, two layers
    lr: float = 1e-3
    l2: float = 1e-4              # scikit-learn's alpha: 0.5·l2·‖W‖² / n_batch added to the loss
    batch_size: int = 200
    max_epochs: int = 1000
    tol: float = 1e-4
    n_iter_no_change: int = 10
    seed: int = 0


def _init(t: int, fan_in: int, fan_out: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform, as scikit-learn
    w = (torch.rand(t, fan_in, fan_out, generator=gen) * 2 - 1) * bound
    b = (torch.rand(t, 1, fan_out, generator=gen) * 2 - 1) * bound
    return w.requires_grad_(), b.requires_grad_()


def _forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``T`` independent MLPs at once: ``x [T, B, D] -> logits [T, B]``."""
    w1, b1, w2, b2, w3, b3 = params
    h = torch.relu(torch.baddbmm(b1, x, w1))
    h = torch.relu(torch.baddbmm(b2, h, w2))
    return torch.baddbmm(b3, h, w3).squeeze(-1)


def _fit_predict(xtr: torch.Tensor, ytr: torch.Tensor, xte: list[torch.Tensor],
                 cfg: C2STConfig, gen: torch.Generator) -> list[np.ndarray]:
    """Train ``T`` independent classifiers on ``xtr [T, n, D]``, ``ytr [T, n]`` in lock-step
    and predict ``xte[t]``. Each stops on its own (its weights at that epoch are kept) and
    leaves the batch, so the slowest does not make the others' work continue; the random
    stream is drawn for all ``T`` every epoch, so each classifier's answer is the same as in
    a batch where none leaves."""
    t, n, d = xtr.shape
    h = max(1, cfg.hidden_factor * d)
    params = [*_init(t, d, h, gen), *_init(t, h, h, gen), *_init(t, h, 1, gen)]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    bs = min(cfg.batch_size, n)
    active = torch.arange(t)                       # original index of each row of params
    best = torch.full((t,), math.inf, dtype=torch.float64)
    stale = torch.zeros(t, dtype=torch.long)
    frozen: list[list[torch.Tensor] | None] = [None] * t
    for _ in range(cfg.max_epochs):
        perm = torch.argsort(torch.rand(t, n, generator=gen), 1)[active]
        rows = torch.arange(len(active))[:, None]
        x_a, y_a = xtr[active], ytr[active]
        total = torch.zeros(len(active), dtype=torch.float64)
        for i in range(0, n, bs):
            idx = perm[:, i:i + bs]
            logits = _forward(params, x_a[rows, idx])
            bce = nn.functional.binary_cross_entropy_with_logits(
                logits, y_a[rows, idx], reduction="none").mean(1)
            l2 = sum((w**2).sum((1, 2)) for w in params[0::2])
            loss = bce + 0.5 * cfg.l2 * l2 / idx.shape[1]            # [T_active]
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            total += loss.detach().double() * idx.shape[1]
        total /= n
        b, st = best[active], stale[active]
        st = torch.where(total > b - cfg.tol, st + 1, torch.zeros_like(st))
        best[active], stale[active] = torch.minimum(b, total), st
        done = st >= cfg.n_iter_no_change
        for j in done.nonzero().flatten().tolist():
            frozen[int(active[j])] = [p[j].detach().clone() for p in params]
        if bool(done.all()):
            break
        if bool(done.any()):
            params, opt = _keep_rows(params, opt, ~done, cfg.lr)
            active = active[~done]
    out = []
    with torch.no_grad():
        for k in range(t):
            f = frozen[k]
            p = f if f is not None else [q[int((active == k).nonzero()[0, 0])].detach()
                                         for q in params]
            out.append((_forward([q[None] for q in p], xte[k][None])[0] > 0).numpy())
    return out


def _keep_rows(params: list[torch.Tensor], opt: torch.optim.Adam, keep: torch.Tensor, lr: float
               ) -> tuple[list[torch.Tensor], torch.optim.Adam]:
    """The classifiers of rows ``keep [T]`` only, with their Adam moments and step count."""
    new = [p.detach()[keep].clone().requires_grad_() for p in params]
    new_opt = torch.optim.Adam(new, lr=lr)
    for p, q in zip(params, new, strict=True):
        st = opt.state.get(p)
        if st:
            new_opt.state[q] = {k: (v[keep].clone() if k != "step" else v.clone())
                                for k, v in st.items()}
    return new, new_opt


def _prepare(x: np.ndarray, y: np.ndarray, cfg: C2STConfig) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"c2st needs two samples [N, D] and [M, D], got {x.shape} and {y.shape}")
    if len(x) < cfg.folds or len(y) < cfg.folds:
        raise ValueError(f"c2st needs at least {cfg.folds} points per sample")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("c2st: samples hold NaN or inf")
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    data = torch.as_tensor(np.concatenate([(x - mean) / std, (y - mean) / std]),
                           dtype=torch.float32)
    return data, torch.cat([torch.zeros(len(x)), torch.ones(len(y))])


def c2st_many(pairs: list[tuple[np.ndarray, np.ndarray]], cfg: C2STConfig | None = None
              ) -> np.ndarray:
    """Held-out accuracy per fold ``[M, K]`` for ``M`` pairs of samples ``(x [N, D] label 0,
    y [N', D] label 1)``; every pair is z-scored with the mean and std of its ``x``.

    All ``M·K`` classifiers train together as one batched model (same answers as one at a
    time, far fewer Python steps). Pairs must have the same total size and D; a fold's
    training set is cut to the smallest fold's (at most one point less)."""
    cfg = cfg or C2STConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    prepared = [_prepare(x, y, cfg) for x, y in pairs]
    if len({tuple(d.shape) for d, _ in prepared}) != 1:
        raise ValueError("c2st_many: every pair needs the same sample sizes and dimension")
    n_all = len(prepared[0][0])
    n_train = n_all - math.ceil(n_all / cfg.folds)
    xtr, ytr, xte, yte = [], [], [], []
    for data, labels in prepared:
        folds = torch.tensor_split(torch.randperm(n_all, generator=gen), cfg.folds)
        for k in range(cfg.folds):
            train = torch.cat([f for j, f in enumerate(folds) if j != k])[:n_train]
            xtr.append(data[train])
            ytr.append(labels[train])
            xte.append(data[folds[k]])
            yte.append(labels[folds[k]].numpy().astype(bool))
    pred = _fit_predict(torch.stack(xtr), torch.stack(ytr), xte, cfg, gen)
    acc = [float((p == y).mean()) for p, y in zip(pred, yte, strict=True)]
    return np.asarray(acc).reshape(len(pairs), cfg.folds)


def c2st_folds(x: np.ndarray, y: np.ndarray, cfg: C2STConfig | None = None) -> np.ndarray:
    """Held-out accuracy per fold ``[K]`` of an MLP telling ``x [N, D]`` (label 0) from
    ``y [M, D]`` (label 1); both are z-scored with the mean and std of ``x``."""
    return c2st_many([(x, y)], cfg)[0]


def c2st(x: np.ndarray, y: np.ndarray, cfg: C2STConfig | None = None) -> float:
    """C2ST accuracy (mean over the folds): 0.5 for identical distributions, 1 for disjoint."""
    return float(c2st_folds(x, y, cfg).mean())
