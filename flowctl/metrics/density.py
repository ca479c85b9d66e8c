"""Density-estimation metrics: mean NLL with standard error, Monte-Carlo KL divergence."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kl_divergence", "mean_and_se", "nll"]


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean of ``values`` and its standard error ``std / sqrt(n)`` (ddof=1)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_and_se of an empty array")
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), se


def nll(log_prob: np.ndarray) -> tuple[float, float]:
    """Mean negative log-likelihood (nats per row) and its standard error."""
    m, se = mean_and_se(-np.asarray(log_prob, dtype=np.float64))
    return m, se


def kl_divergence(log_p: np.ndarray, log_q: np.ndarray) -> tuple[float, float]:
    """Monte-Carlo ``KL(p || q) = E_p[log p - log q]`` from samples ``x ~ p``.

    ``log_p``/``log_q`` are the two log-densities at the same samples drawn from ``p``.
    Returns the estimate in nats and its standard error.
    """
    lp = np.asarray(log_p, dtype=np.float64)
    lq = np.asarray(log_q, dtype=np.float64)
    if lp.shape != lq.shape:
        raise ValueError(f"shape mismatch: log_p {lp.shape} vs log_q {lq.shape}")
    return mean_and_se(lp - lq)
