"""Simulators for posterior estimation: prior p(θ) and forward model p(x | θ).

A :class:`Simulator` draws parameters ``θ [N, P]`` from its prior and data ``x [N, X]`` from
the forward model. Some know their exact posterior (:meth:`Simulator.log_posterior`), which
``flowctl evaluate`` then uses for the KL divergence to the learnt posterior.

Shipped: ``linear_gaussian`` (analytic Gaussian posterior) and ``two_moons`` (the SBI
benchmark, arXiv:2101.04653, bimodal crescent posterior). Users plug in their own with
``simulator.target=package.module:function`` where the function is
``f(n: int, rng: numpy.random.Generator, **params) -> (theta [n, P], x [n, X])``.

>>> sim = make_simulator({"kind": "linear_gaussian"})
>>> theta, x = sim.sample_joint(5, np.random.default_rng(0))
>>> theta.shape, x.shape
((5, 2), (5, 3))
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["SIMULATORS", "FunctionSimulator", "LinearGaussian", "Simulator", "SimulatorError",
           "TwoMoons", "load_target", "make_simulator"]


class SimulatorError(ValueError):
    """A simulator config or a user simulator is unusable (one line for the CLI)."""


class Simulator:
    """Base class: a prior and a forward model. Arrays are float64 numpy."""

    name: str = "simulator"
    theta_dim: int = 0
    x_dim: int = 0

    def sample_joint(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(θ [n, P], x [n, X])`` from the joint p(θ) p(x | θ)."""
        raise NotImplementedError

    @property
    def exact(self) -> bool:
        """Whether :meth:`log_posterior` is available."""
        return False

    def log_posterior(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log p(θ | x) [N]`` for ``θ [N, P]`` and ``x [N, X]`` (exact simulators only)."""
        raise NotImplementedError(f"{self.name} has no analytic posterior")

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "theta_dim": self.theta_dim, "x_dim": self.x_dim,
                "exact": self.exact}


class LinearGaussian(Simulator):
    """θ ~ N(0, σ_p² I_P), x = A θ + ε with ε ~ N(0, σ_n² I_X); ``A [X, P]`` fixed by ``seed``.

    Posterior: N(μ, Σ) with Σ = (I/σ_p² + AᵀA/σ_n²)⁻¹ and μ = Σ Aᵀ x / σ_n².
    """

    name = "linear_gaussian"

    def __init__(self, theta_dim: int = 2, x_dim: int = 3, prior_std: float = 1.0,
                 noise_std: float = 0.5, seed: int = 1234) -> None:
        if theta_dim < 1 or x_dim < 1 or prior_std <= 0 or noise_std <= 0:
            raise SimulatorError("linear_gaussian needs theta_dim, x_dim >= 1 and positive "
                                 "prior_std, noise_std")
        self.theta_dim, self.x_dim = int(theta_dim), int(x_dim)
        self.prior_std, self.noise_std = float(prior_std), float(noise_std)
        self.A = np.random.default_rng(seed).normal(size=(x_dim, theta_dim)) / math.sqrt(theta_dim)
        prec = np.eye(theta_dim) / prior_std**2 + self.A.T @ self.A / noise_std**2
        self.cov = np.linalg.inv(prec)
        self._chol = np.linalg.cholesky(self.cov)
        self._logdet = 2.0 * float(np.log(np.diag(self._chol)).sum())

    def sample_joint(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        theta = rng.normal(size=(n, self.theta_dim)) * self.prior_std
        x = theta @ self.A.T + rng.normal(size=(n, self.x_dim)) * self.noise_std
        return theta, x

    @property
    def exact(self) -> bool:
        return True

    def posterior_mean(self, x: np.ndarray) -> np.ndarray:
        """μ(x) ``[N, P]``."""
        return np.asarray(x, np.float64) @ self.A @ self.cov / self.noise_std**2

    def log_posterior(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        d = np.asarray(theta, np.float64) - self.posterior_mean(x)
        sol = np.linalg.solve(self._chol, d.T).T  # L⁻¹ d
        return -0.5 * ((sol**2).sum(1) + self._logdet + self.theta_dim * math.log(2 * math.pi))

    def sample_posterior(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, P]`` exact posterior draws for one observation ``x [X]``."""
        mu = self.posterior_mean(np.asarray(x, np.float64)[None])[0]
        return mu + rng.normal(size=(n, self.theta_dim)) @ self._chol.T


class TwoMoons(Simulator):
    """Two moons (Greenberg et al. 2019; SBI benchmark arXiv:2101.04653).

    θ ~ U[-1, 1]², α ~ U(-π/2, π/2), r ~ N(0.1, 0.01²),
    x = (r cos α + 0.25, r sin α) + (-|θ₁ + θ₂| / √2, (-θ₁ + θ₂) / √2).
    The posterior is bimodal and crescent-shaped (no closed form here).
    """

    name = "two_moons"
    theta_dim = 2
    x_dim = 2

    def __init__(self, r_mean: float = 0.1, r_std: float = 0.01) -> None:
        self.r_mean, self.r_std = float(r_mean), float(r_std)

    def sample_joint(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        theta = rng.uniform(-1.0, 1.0, size=(n, 2))
        a = rng.uniform(-math.pi / 2, math.pi / 2, size=n)
        r = rng.normal(self.r_mean, self.r_std, size=n)
        p = np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], 1)
        s = math.sqrt(2.0)
        shift = np.stack([-np.abs(theta[:, 0] + theta[:, 1]) / s,
                          (-theta[:, 0] + theta[:, 1]) / s], 1)
        return theta, p + shift


class FunctionSimulator(Simulator):
    """A user's ``f(n, rng, **params) -> (θ [n, P], x [n, X])`` as a :class:`Simulator`."""

    def __init__(self, fn: Callable[..., Any], name: str, params: Mapping[str, Any]) -> None:
        self.fn, self.name, self.params = fn, name, dict(params)
        theta, x = self.sample_joint(2, np.random.default_rng(0))
        self.theta_dim, self.x_dim = theta.shape[1], x.shape[1]

    def sample_joint(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        try:
            out = self.fn(n, rng, **self.params)
        except TypeError as exc:
            raise SimulatorError(f"simulator {self.name}: {exc}") from None
        if not (isinstance(out, tuple) and len(out) == 2):
            raise SimulatorError(f"simulator {self.name} must return (theta, x), got "
                                 f"{type(out).__name__}")
        theta, x = (np.asarray(v, np.float64) for v in out)
        theta = theta.reshape(n, -1) if theta.ndim == 1 else theta
        x = x.reshape(n, -1) if x.ndim == 1 else x
        if theta.ndim != 2 or x.ndim != 2 or len(theta) != n or len(x) != n:
            raise SimulatorError(f"simulator {self.name} returned shapes {theta.shape} and "
                                 f"{x.shape}; expected ({n}, P) and ({n}, X)")
        if not (np.isfinite(theta).all() and np.isfinite(x).all()):
            raise SimulatorError(f"simulator {self.name} returned non-finite values")
        return theta, x


SIMULATORS: dict[str, type[Simulator]] = {"linear_gaussian": LinearGaussian,
                                          "two_moons": TwoMoons}


def load_target(target: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (or ``package.module.function``)."""
    if not isinstance(target, str) or not target.strip():
        raise SimulatorError("simulator.target must be 'package.module:function'")
    mod_name, sep, attr = target.partition(":")
    if not sep:
        mod_name, _, attr = target.rpartition(".")
    if not mod_name or not attr:
        raise SimulatorError(f"simulator.target={target!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SimulatorError(f"simulator.target={target!r}: cannot import {mod_name!r} "
                             f"({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SimulatorError(f"simulator.target={target!r}: {mod_name} has no function {attr!r}")
    return fn


def make_simulator(cfg: Mapping[str, Any]) -> Simulator:
    """A simulator from the ``simulator`` config: ``target`` (user function) or ``kind``,
    with keyword arguments in ``params``."""
    params = dict(cfg.get("params") or {})
    target = cfg.get("target")
    if target:
        fn = load_target(target)
        try:
            sig = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            sig = {}
        if sig and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
            # params of the config's shipped simulator do not go to a user function
            params = {k: v for k, v in params.items() if k in sig}
        return FunctionSimulator(fn, str(target), params)
    kind = cfg.get("kind")
    if kind not in SIMULATORS:
        raise SimulatorError(f"unknown simulator.kind {kind!r}; available: "
                             f"{', '.join(SIMULATORS)} (or simulator.target=package.module:"
                             "function)")
    cls = SIMULATORS[kind]
    valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
    bad = sorted(set(params) - valid)
    if bad:
        raise SimulatorError(f"simulator.params for {kind}: unknown {', '.join(bad)}; valid: "
                             f"{', '.join(sorted(valid)) or '(none)'}")
    return cls(**params)
