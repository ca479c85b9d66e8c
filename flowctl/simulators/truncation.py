"""Truncated priors for sequential posterior estimation (TSNPE, Deistler et al. 2022,
arXiv:2210.04815).

Round r+1 simulates from the prior restricted to the highest-density region (HDR) of the
current posterior estimate q(θ | x_o) holding 1 − ε of its mass. Inside that region the
truncated prior is proportional to the prior, so the plain NPE loss on all rounds' pairs still
targets the true posterior there: no proposal correction is needed. Nothing here knows about
flows: the density is any callable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["TruncationError", "hdr_threshold", "sample_truncated"]


class TruncationError(RuntimeError):
    """The truncated region is too small to sample by rejection from the prior."""


def hdr_threshold(log_q_of_draws: np.ndarray, epsilon: float) -> float:
    """The log-density level whose super-level set holds ``1 − epsilon`` of q, estimated from
    log q of draws of q ``[L]`` (the ``epsilon`` quantile)."""
    lq = np.asarray(log_q_of_draws, np.float64)
    lq = lq[np.isfinite(lq)]
    if not len(lq):
        raise TruncationError("no finite log q among the posterior draws")
    return float(np.quantile(lq, epsilon))


def sample_truncated(n: int, sample_prior: Callable[[int], np.ndarray],
                     log_q: Callable[[np.ndarray], np.ndarray], threshold: float,
                     batch: int = 100_000, max_draws: int = 20_000_000
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """``n`` draws ``[n, P]`` from the prior restricted to {θ : log q(θ) ≥ threshold}, by
    rejection; also ``{"acceptance", "prior_draws"}``.

    Raises :class:`TruncationError` when fewer than ``n`` are accepted in ``max_draws``.
    """
    out: list[np.ndarray] = []
    got = drawn = 0
    while got < n:
        if drawn >= max_draws:
            raise TruncationError(
                f"only {got} of {n} prior draws fell in the truncated region after {drawn} "
                f"(acceptance {got / max(drawn, 1):.2e}); use fewer rounds or a larger "
                "sims.truncation")
        th = np.asarray(sample_prior(batch), np.float64)
        keep = th[np.asarray(log_q(th)) >= threshold]
        out.append(keep)
        got += len(keep)
        drawn += len(th)
    return np.concatenate(out)[:n], {"acceptance": got / drawn, "prior_draws": drawn}
