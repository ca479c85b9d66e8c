"""A user simulator for the tests: θ ~ N(0, 1), x = θ + scale · noise (1-D)."""

from __future__ import annotations

import numpy as np


def shifted(n: int, rng: np.random.Generator, scale: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``(θ [n, 1], x [n, 2])``: two noisy copies of θ."""
    theta = rng.normal(size=(n, 1))
    return theta, theta + scale * rng.normal(size=(n, 2))


def broken(n: int, rng: np.random.Generator) -> np.ndarray:
    """Returns one array instead of (theta, x)."""
    return rng.normal(size=(n, 2))
