"""Simulators for posterior estimation: prior p(θ) and forward model p(x | θ).

A :class:`Simulator` draws parameters ``θ [N, P]`` from its prior and data ``x [N, X]`` from
the forward model. Some know their exact posterior (:meth:`Simulator.log_posterior`), which
``flowctl evaluate`` then uses for the KL divergence to the learnt posterior.

Shipped: ``linear_gaussian`` (analytic Gaussian posterior; with ``matrix: identity`` and
variances 0.1 it is the SBI benchmark's Gaussian linear task), ``two_moons`` and ``slcp`` (the
SBI benchmark, arXiv:2101.04653). Shipped simulators also give the prior and the forward model
separately (:meth:`Simulator.sample_prior`, :meth:`Simulator.simulate`, used by sequential
rounds) and reference posterior draws (:meth:`Simulator.sample_reference`, used by C2ST):
exact for the Gaussian and the two moons, MCMC for SLCP. Users plug in their own with
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

__all__ = ["SIMULATORS", "SLCP", "FunctionSimulator", "LinearGaussian", "Simulator",
           "SimulatorError", "TwoMoons", "load_target", "make_simulator"]


class SimulatorError(ValueError):
    """A simulator config or a user simulator is unusable (one line for the CLI)."""


class Simulator:
    """Base class: a prior and a forward model. Arrays are float64 numpy."""

    name: str = "simulator"
    theta_dim: int = 0
    x_dim: int = 0

    #: box of the prior's support ``(low [P], high [P])``, or None (unbounded or unknown)
    prior_bounds: tuple[np.ndarray, np.ndarray] | None = None

    def sample_joint(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(θ [n, P], x [n, X])`` from the joint p(θ) p(x | θ)."""
        theta = self.sample_prior(n, rng)
        return theta, self.simulate(theta, rng)

    @property
    def separable(self) -> bool:
        """Whether the prior and the forward model are available apart (sequential rounds)."""
        return type(self).simulate is not Simulator.simulate

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``θ [n, P]`` from the prior."""
        raise NotImplementedError(f"{self.name} has no separate prior")

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x [n, X]`` from p(x | θ) for ``θ [n, P]``."""
        raise NotImplementedError(f"{self.name} has no separate forward model")

    @property
    def has_reference(self) -> bool:
        """Whether :meth:`sample_reference` gives reference posterior draws."""
        return type(self).sample_reference is not Simulator.sample_reference

    def sample_reference(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, P]`` reference posterior draws for one observation ``x [X]``."""
        raise NotImplementedError(f"{self.name} has no reference posterior")

    @property
    def exact(self) -> bool:
        """Whether :meth:`log_posterior` is available."""
        return False

    def log_posterior(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log p(θ | x) [N]`` for ``θ [N, P]`` and ``x [N, X]`` (exact simulators only)."""
        raise NotImplementedError(f"{self.name} has no analytic posterior")

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "theta_dim": self.theta_dim, "x_dim": self.x_dim,
                "exact": self.exact, "reference": self.has_reference}


class LinearGaussian(Simulator):
    """θ ~ N(0, σ_p² I_P), x = A θ + ε with ε ~ N(0, σ_n² I_X); ``A [X, P]`` random (fixed by
    ``seed``, ``matrix: random``) or the identity (``matrix: identity``, needs X = P).

    Posterior: N(μ, Σ) with Σ = (I/σ_p² + AᵀA/σ_n²)⁻¹ and μ = Σ Aᵀ x / σ_n². The SBI
    benchmark's "Gaussian linear" task is P = X = 10, identity, σ_p² = σ_n² = 0.1.
    """

    name = "linear_gaussian"

    def __init__(self, theta_dim: int = 2, x_dim: int = 3, prior_std: float = 1.0,
                 noise_std: float = 0.5, seed: int = 1234, matrix: str = "random") -> None:
        if theta_dim < 1 or x_dim < 1 or prior_std <= 0 or noise_std <= 0:
            raise SimulatorError("linear_gaussian needs theta_dim, x_dim >= 1 and positive "
                                 "prior_std, noise_std")
        if matrix not in ("random", "identity") or (matrix == "identity" and x_dim != theta_dim):
            raise SimulatorError(f"linear_gaussian matrix={matrix!r}: expected 'random' or "
                                 "'identity' (identity needs x_dim == theta_dim)")
        self.theta_dim, self.x_dim = int(theta_dim), int(x_dim)
        self.prior_std, self.noise_std = float(prior_std), float(noise_std)
        if matrix == "identity":
            self.A = np.eye(theta_dim)
        else:
            self.A = (np.random.default_rng(seed).normal(size=(x_dim, theta_dim))
                      / math.sqrt(theta_dim))
        prec = np.eye(theta_dim) / prior_std**2 + self.A.T @ self.A / noise_std**2
        self.cov = np.linalg.inv(prec)
        self._chol = np.linalg.cholesky(self.cov)
        self._logdet = 2.0 * float(np.log(np.diag(self._chol)).sum())

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(size=(n, self.theta_dim)) * self.prior_std

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        theta = np.asarray(theta, np.float64)
        return theta @ self.A.T + rng.normal(size=(len(theta), self.x_dim)) * self.noise_std

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

    def sample_reference(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample_posterior(x, n, rng)


class TwoMoons(Simulator):
    """Two moons (Greenberg et al. 2019; SBI benchmark arXiv:2101.04653).

    θ ~ U[-1, 1]², α ~ U(-π/2, π/2), r ~ N(0.1, 0.01²),
    x = (r cos α + 0.25, r sin α) + (-|θ₁ + θ₂| / √2, (-θ₁ + θ₂) / √2).
    The posterior is bimodal and crescent-shaped. Exact draws (:meth:`sample_reference`):
    draw (α, r), solve x for |θ₁ + θ₂| and θ₂ − θ₁, pick the sign of θ₁ + θ₂ at random (the
    map is linear on each branch, so the density is the likelihood) and reject draws outside
    the prior box.
    """

    name = "two_moons"
    theta_dim = 2
    x_dim = 2

    def __init__(self, r_mean: float = 0.1, r_std: float = 0.01) -> None:
        self.r_mean, self.r_std = float(r_mean), float(r_std)
        self.prior_bounds = (np.full(2, -1.0), np.full(2, 1.0))

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(n, 2))

    def _moon(self, n: int, rng: np.random.Generator) -> np.ndarray:
        a = rng.uniform(-math.pi / 2, math.pi / 2, size=n)
        r = rng.normal(self.r_mean, self.r_std, size=n)
        return np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], 1)

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        theta = np.asarray(theta, np.float64)
        s = math.sqrt(2.0)
        shift = np.stack([-np.abs(theta[:, 0] + theta[:, 1]) / s,
                          (-theta[:, 0] + theta[:, 1]) / s], 1)
        return self._moon(len(theta), rng) + shift

    def sample_reference(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(2)
        out: list[np.ndarray] = []
        got, tries = 0, 0
        while got < n:
            m = max(2 * (n - got), 1000)
            shift = x - self._moon(m, rng)                  # (-|u|/√2, v/√2)
            u = -math.sqrt(2.0) * shift[:, 0] * rng.choice([-1.0, 1.0], size=m)
            v = math.sqrt(2.0) * shift[:, 1]
            th = np.stack([(u - v) / 2, (u + v) / 2], 1)
            ok = (shift[:, 0] <= 0) & (np.abs(th) <= 1.0).all(1)
            out.append(th[ok])
            got += int(ok.sum())
            tries += 1
            if tries > 1000:
                raise SimulatorError(f"two_moons: x={x.tolist()} is (almost) impossible under "
                                     "the prior; no reference posterior")
        return np.concatenate(out)[:n]


class SLCP(Simulator):
    """Simple likelihood, complex posterior (Papamakarios et al. 2019; SBI benchmark).

    θ ~ U[-3, 3]⁵; x is 4 iid draws from N(m, S) in 2-D, flattened to 8 numbers, with
    m = (θ₁, θ₂), s₁ = θ₃², s₂ = θ₄², ρ = tanh θ₅, S = [[s₁², ρ s₁ s₂], [ρ s₁ s₂, s₂²]].
    The likelihood is closed-form; the posterior has four symmetric modes (signs of θ₃, θ₄).
    Reference draws (:meth:`sample_reference`) come from MCMC: importance resampling of prior
    draws, then random-walk Metropolis chains run in parallel with exact sign-flip moves;
    approximate (like the benchmark's own MCMC reference).
    """

    name = "slcp"
    theta_dim = 5
    x_dim = 8

    def __init__(self, n_points: int = 4, mcmc_steps: int = 1000) -> None:
        if n_points < 1 or mcmc_steps < 0:
            raise SimulatorError("slcp needs n_points >= 1 and mcmc_steps >= 0")
        self.n_points, self.mcmc_steps = int(n_points), int(mcmc_steps)
        self.x_dim = 2 * self.n_points
        self.prior_bounds = (np.full(5, -3.0), np.full(5, 3.0))

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-3.0, 3.0, size=(n, 5))

    @staticmethod
    def _params(theta: np.ndarray) -> tuple[np.ndarray, ...]:
        s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, np.tanh(theta[:, 4])
        return theta[:, :2], s1, s2, rho

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        theta = np.asarray(theta, np.float64)
        m, s1, s2, rho = self._params(theta)
        z = rng.normal(size=(len(theta), self.n_points, 2))
        x1 = s1[:, None] * z[..., 0]
        x2 = s2[:, None] * (rho[:, None] * z[..., 0] + np.sqrt(1 - rho**2)[:, None] * z[..., 1])
        return (np.stack([x1, x2], -1) + m[:, None, :]).reshape(len(theta), -1)

    def log_likelihood(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log p(x | θ) [N]`` for ``θ [N, 5]`` and one ``x [8]``."""
        theta = np.asarray(theta, np.float64)
        m, s1, s2, rho = self._params(theta)
        pts = np.asarray(x, np.float64).reshape(1, self.n_points, 2) - m[:, None, :]
        a = pts[..., 0] / s1[:, None]
        b = pts[..., 1] / s2[:, None]
        one = 1 - rho**2
        q = (a**2 - 2 * rho[:, None] * a * b + b**2) / one[:, None]
        with np.errstate(divide="ignore"):
            logdet = 2 * np.log(s1 * s2) + np.log(one)
        out = -0.5 * (q.sum(1) + self.n_points * (logdet + 2 * math.log(2 * math.pi)))
        return np.where(np.isfinite(out), out, -np.inf)

    def _log_post(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        inside = (np.abs(theta) <= 3.0).all(1)
        return np.where(inside, self.log_likelihood(np.clip(theta, -3, 3), x), -np.inf)

    def sample_reference(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(self.x_dim)
        # importance resampling of prior draws as the chains' starting points
        cands, logw = [], []
        for _ in range(10):
            c = self.sample_prior(100_000, rng)
            cands.append(c)
            logw.append(self.log_likelihood(c, x))
        c, lw = np.concatenate(cands), np.concatenate(logw)
        w = np.exp(lw - lw.max())
        th = c[rng.choice(len(c), size=n, p=w / w.sum())]
        lp = self._log_post(th, x)
        step = 0.5 * th.std(0) + 1e-3
        for it in range(self.mcmc_steps):
            prop = th + rng.normal(size=th.shape) * step
            lq = self._log_post(prop, x)
            acc = np.log(rng.uniform(size=n)) < lq - lp
            th[acc], lp[acc] = prop[acc], lq[acc]
            # the likelihood depends on θ₃², θ₄² only: sign flips are exact moves
            th[:, 2:4] *= rng.choice([-1.0, 1.0], size=(n, 2))
            if it % 50 == 49 and 2 * it < self.mcmc_steps:  # adapt the scale in the first half
                rate = acc.mean()
                step = (0.5 * th.std(0) + 1e-4) * (2.0 if rate > 0.4 else 1.0 if rate > 0.15
                                                   else 0.5)
        return th


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
                                          "two_moons": TwoMoons, "slcp": SLCP}


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
