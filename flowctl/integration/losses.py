"""Divergences between p = |f|/I and a sampler q, trained without samples of p.

All losses take |f| [N] (detached, >= 0), log q_test [N] (the current flow's log density at
the points, with gradient) and log q_sample [N] (the density the points were drawn from,
detached). For fresh points q_test == q_sample numerically; for buffered points the ratio is
the importance correction (MadNIS, arXiv:2212.06172). Computed in float64; the gradients are
score-function forms (i-flow, arXiv:2001.05486; Mueller et al., arXiv:1808.03856).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["LOSSES", "exponential_loss", "kl_loss", "variance_loss"]


def _weights(f_abs: Tensor, log_q_sample: Tensor) -> tuple[Tensor, Tensor]:
    """Importance weights w = |f| / q_sample [N] and their mean (the MC integral of |f|)."""
    w = f_abs * torch.exp(-log_q_sample)
    return w, w.mean().clamp_min(1e-300)


def kl_loss(f_abs: Tensor, log_q_test: Tensor, log_q_sample: Tensor) -> Tensor:
    """KL(p||q) ~ mean_{q_sample}[(p/q_sample)(log p - log q_test)], p = |f|/I."""
    f_abs, ls, lt = f_abs.double(), log_q_sample.double(), log_q_test.double()
    w, norm = _weights(f_abs, ls)
    pos = f_abs > 0
    log_p = torch.log(torch.where(pos, f_abs, torch.ones_like(f_abs))) - torch.log(norm)
    terms = torch.where(pos, (w / norm) * (log_p - lt), torch.zeros_like(w))
    return terms.mean()


def variance_loss(f_abs: Tensor, log_q_test: Tensor, log_q_sample: Tensor) -> Tensor:
    """Pearson chi^2 / relative variance per point (MadNIS form): mean[(q_t/q_s)(f/q_t - mu)^2]
    / mu^2, mu = mean(|f|/q_s); its gradient is that of the IS variance int f^2/q. A batch
    with f = 0 everywhere gives 0 (nothing to learn), not 0/0."""
    f_abs, ls, lt = f_abs.double(), log_q_sample.double(), log_q_test.double()
    top = f_abs.max()  # the loss is scale-free: divide by max|f| so that mu^2 cannot underflow
    f_abs = f_abs / torch.where(top > 0, top, torch.ones_like(top))
    mu = (f_abs * torch.exp(-ls)).mean()
    safe = torch.where(mu > 0, mu, torch.ones_like(mu))  # f = 0 on the whole batch: loss 0
    ratio = torch.exp(lt - ls)
    return (ratio * (f_abs * torch.exp(-lt) - mu) ** 2).mean() / safe**2


def exponential_loss(f_abs: Tensor, log_q_test: Tensor, log_q_sample: Tensor) -> Tensor:
    """i-flow's exponential divergence: mean[(p/q_sample)(log p - log q_test)^2]."""
    f_abs, ls, lt = f_abs.double(), log_q_sample.double(), log_q_test.double()
    w, norm = _weights(f_abs, ls)
    pos = f_abs > 0
    log_p = torch.log(torch.where(pos, f_abs, torch.ones_like(f_abs))) - torch.log(norm)
    terms = torch.where(pos, (w / norm) * (log_p - lt) ** 2, torch.zeros_like(w))
    return terms.mean()


LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "kl": kl_loss,
    "variance": variance_loss,
    "chi2": variance_loss,
    "exponential": exponential_loss,
}
"""Name -> loss ``(|f| [N], log q_test [N], log q_sample [N]) -> scalar``."""
