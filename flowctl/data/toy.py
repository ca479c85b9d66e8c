"""Synthetic densities for tests, demos and benchmarks (NumPy only, no models).

Each toy is a :class:`Toy` with ``dim``, ``sample(n, rng) -> [n, dim]`` and, where the density
is known in closed form, ``log_prob(x) -> [n]`` in nats (``exact`` tells which).

>>> import numpy as np
>>> ring = make_toy("ring")
>>> x = ring.sample(1000, np.random.default_rng(0))
>>> x.shape, ring.log_prob(x).shape
((1000, 2), (1000,))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TOYS", "Checkerboard", "GaussianMixture", "Moons", "Ring", "Toy", "make_toy"]

LOG_2PI = math.log(2.0 * math.pi)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


class Toy:
    """A synthetic distribution on R^dim."""

    dim: int = 2
    exact: bool = False

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` points, shape ``[n, dim]`` (float64)."""
        raise NotImplementedError

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact log-density of ``x`` ``[n, dim]`` in nats, shape ``[n]``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form density")


@dataclass
class GaussianMixture(Toy):
    """Mixture of isotropic or diagonal Gaussians with exact density.

    ``means`` [K, D], ``scales`` [K, D] (standard deviations), ``weights`` [K].
    """

    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray = field(default=None)  # type: ignore[assignment]
    exact: bool = True

    def __post_init__(self) -> None:
        self.means = np.asarray(self.means, dtype=np.float64)
        k, d = self.means.shape
        self.scales = np.broadcast_to(np.asarray(self.scales, dtype=np.float64), (k, d)).copy()
        if self.weights is None:
            self.weights = np.full(k, 1.0 / k)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.weights = self.weights / self.weights.sum()
        self.dim = d

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        eps = rng.standard_normal((n, self.dim))
        return self.means[comp] + self.scales[comp] * eps

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        z = (x[:, None, :] - self.means[None]) / self.scales[None]  # [n, K, D]
        log_comp = (
            -0.5 * np.sum(z**2, axis=-1)
            - np.sum(np.log(self.scales), axis=-1)[None]
            - 0.5 * self.dim * LOG_2PI
        )
        return _logsumexp(log_comp + np.log(self.weights)[None], axis=1)


class Ring(GaussianMixture):
    """``modes`` Gaussians of width ``sigma`` evenly spaced on a circle of ``radius``."""

    def __init__(self, modes: int = 8, radius: float = 2.0, sigma: float = 0.25) -> None:
        angles = 2.0 * np.pi * np.arange(modes) / modes
        means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        super().__init__(means=means, scales=np.full((modes, 2), sigma))


def make_gmm(dim: int = 4, components: int = 5, spread: float = 3.0, sigma: float = 0.5,
             seed: int = 0) -> GaussianMixture:
    """An n-D Gaussian mixture with reproducible random means, scales and weights."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, spread, size=(components, dim))
    scales = sigma * np.exp(rng.uniform(-0.3, 0.3, size=(components, dim)))
    weights = rng.dirichlet(np.full(components, 5.0))
    return GaussianMixture(means=means, scales=scales, weights=weights)


class Moons(Toy):
    """Two interleaving half circles with Gaussian noise (no closed-form density)."""

    def __init__(self, noise: float = 0.1) -> None:
        self.dim = 2
        self.noise = float(noise)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        upper = rng.random(n) < 0.5
        t = rng.uniform(0.0, np.pi, n)
        x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        pts = np.stack([x - 0.5, y - 0.25], axis=1)
        return pts + self.noise * rng.standard_normal((n, 2))


class Checkerboard(Toy):
    """Uniform density on the 8 dark squares of a 4x4 board covering [-2, 2]^2 (exact)."""

    exact = True

    def __init__(self, size: int = 4, scale: float = 1.0) -> None:
        if size % 2:
            raise ValueError("checkerboard size must be even")
        self.dim = 2
        self.size = int(size)
        self.scale = float(scale)

    def _dark(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (i + j) % 2 == 0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cells = [(i, j) for i in range(self.size) for j in range(self.size) if (i + j) % 2 == 0]
        pick = rng.integers(0, len(cells), size=n)
        ij = np.asarray(cells, dtype=np.float64)[pick]
        u = rng.random((n, 2))
        half = self.size / 2.0
        return (ij + u - half) * self.scale

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64) / self.scale + self.size / 2.0
        inside = np.all((x >= 0.0) & (x < self.size), axis=1)
        ij = np.floor(np.clip(x, 0.0, self.size - 1e-9)).astype(np.int64)
        dark = self._dark(ij[:, 0], ij[:, 1]) & inside
        area = (self.size * self.size / 2.0) * self.scale**2
        return np.where(dark, -math.log(area), -np.inf)


TOYS: dict[str, Callable[..., Toy]] = {
    "ring": Ring,
    "moons": Moons,
    "checkerboard": Checkerboard,
    "gmm": make_gmm,
}


def make_toy(kind: str, **params: object) -> Toy:
    """Build a toy distribution by name (``ring``, ``moons``, ``checkerboard``, ``gmm``)."""
    if kind not in TOYS:
        raise ValueError(f"unknown toy data kind {kind!r}; available: {', '.join(TOYS)}")
    return TOYS[kind](**params)
