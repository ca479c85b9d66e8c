"""Conditional density estimation p(x | m) for ANODE and CATHODE: epoch ensembles, the
likelihood ratio, and sampling in the signal region with m drawn from a KDE.

``x [N, D]`` are the auxiliary features, ``m [N]`` the resonant variable (mjj in TeV, fed to the
flow raw as CATHODE does). The flows carry their preprocessing (min-max, logit, standardize)
as bijections, so ``log_prob`` is the density in physical units with every Jacobian included:
the ANODE ratio of two flows with different preprocessing is then simply
``log p_SR(x|m) - log p_SB(x|m)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flowctl.flows import Flow, build

__all__ = [
    "conditional_nll",
    "ensemble_log_prob",
    "kde_sample",
    "load_ensemble",
    "sample_ensemble",
]

#: Log-densities below this (or NaN) are treated as "outside the model's domain".
LOGP_FLOOR = -1000.0


def conditional_nll(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Mean NLL of ``batch = (x [B, D], m [B, 1])``. In eval mode (validation) events whose
    log-density is NaN or below :data:`LOGP_FLOOR` (outside the training range after the
    logit) are left out, as CATHODE's validation does; in training every event counts."""
    x, m = batch[0], batch[1]
    lp = model(x, m)
    if model.training:
        return -lp.mean()
    ok = torch.isfinite(lp) & (lp > LOGP_FLOOR)
    return -lp[ok].mean() if bool(ok.any()) else lp.new_tensor(float("inf"))


def load_ensemble(spec: dict, run_dir: str | Path, k: int) -> list[Flow]:
    """Up to ``k`` flows in eval mode: the lowest-val-loss epochs kept by
    ``trainer.keep_best`` in ``run_dir/checkpoints/top/`` (CATHODE's epoch ensemble), else
    the run's best (or last) checkpoint. Raises ``ValueError`` if the weights do not fit
    ``spec`` and :class:`flowctl.training.TrainingError` if there is no checkpoint."""
    from flowctl.training import load_checkpoint, top_checkpoints

    snaps = top_checkpoints(run_dir)[: max(k, 1)]
    if not snaps:
        ck = load_checkpoint(run_dir)
        snaps = [{"model": ck["model"], "path": Path(run_dir) / "checkpoints"}]
    flows = []
    for s in snaps:
        f = build(spec)
        try:
            f.load_state_dict({n.removeprefix("module."): v for n, v in s["model"].items()})
        except RuntimeError as exc:
            raise ValueError(f"{s['path']} does not match the flow in config.yaml "
                             f"({str(exc).splitlines()[0]})") from None
        flows.append(f.eval())
    return flows


@torch.no_grad()
def ensemble_log_prob(flows: Sequence[Flow], x: np.ndarray, m: np.ndarray,
                      batch: int = 20000) -> np.ndarray:
    """``log mean_k p_k(x | m)`` ``[N]`` (float64), averaged in probability space as ANODE
    does; NaN where any member is undefined (outside a min-max range)."""
    out = []
    for i in range(0, len(x), batch):
        xb = torch.as_tensor(x[i:i + batch], dtype=torch.float32)
        mb = torch.as_tensor(m[i:i + batch], dtype=torch.float32).reshape(-1, 1)
        lps = torch.stack([f.log_prob(xb, mb).double() for f in flows])
        out.append((torch.logsumexp(lps, 0) - math.log(len(flows))).numpy())
    return np.concatenate(out) if out else np.zeros(0)


@torch.no_grad()
def sample_ensemble(flows: Sequence[Flow], m: np.ndarray, batch: int = 50000) -> np.ndarray:
    """One sample ``x [N, D]`` (float64) per condition ``m [N]``; the conditions are dealt
    to the ensemble members in equal shares (CATHODE: n/10 samples from each of 10 epochs)."""
    parts = np.array_split(np.arange(len(m)), len(flows))
    out = np.zeros((len(m), flows[0].features))
    for f, idx in zip(flows, parts):
        for i in range(0, len(idx), batch):
            j = idx[i:i + batch]
            mb = torch.as_tensor(m[j], dtype=torch.float32).reshape(-1, 1)
            out[j] = f.sample(len(j), mb).double().numpy()
    return out


def kde_sample(m: np.ndarray, n: int, bandwidth: float, rng: np.random.Generator,
               eps: float = 1e-8) -> np.ndarray:
    """``n`` draws from a Gaussian KDE of ``m [N]`` built in logit space (CATHODE's SR mjj
    model): min-max onto ``(eps, 1-eps)``, logit, KDE with ``bandwidth``, back. Draws stay in
    ``[min m, max m]``."""
    m = np.asarray(m, np.float64)
    lo, hi = float(m.min()), float(m.max())
    u = eps + (1 - 2 * eps) * (m - lo) / max(hi - lo, 1e-12)
    y = np.log(u) - np.log1p(-u)
    draw = y[rng.integers(0, len(y), n)] + bandwidth * rng.standard_normal(n)
    u = 1.0 / (1.0 + np.exp(-draw))
    return lo + (np.clip((u - eps) / (1 - 2 * eps), 0.0, 1.0)) * (hi - lo)
