"""A fast synthetic sampling calorimeter that writes CaloGAN-format showers for e+, γ and π+.

It stands in for the CaloGAN Geant4 files (which cannot be downloaded here): the same three
layers (``layer_0 [3, 96]`` 5 mm × 160 mm strips, ``layer_1 [12, 12]`` 40 mm cells,
``layer_2 [12, 6]`` 80 mm × 40 mm cells; 480 mm × 480 mm each), a centred particle hitting the
front face perpendicularly, E_inc uniform in 1–100 GeV. It is a parametric model, not a
simulation; what it reproduces qualitatively:

* **Longitudinal profile** (e+, γ): a Gamma profile ``dE/dt ∝ t^(a-1) e^(-bt)`` in radiation
  lengths, ``b = 0.5``, ``t_max = ln(E/E_c) + C`` (``C = -0.5`` e, ``+0.5`` γ; PDG §34.5), with a
  per-shower start and depth fluctuation; γ first convert after an Exp(9/7 X0) path. The layer
  boundaries are at 3, 19 and 21 X0, so the split E0:E1:E2 depends on particle and energy, and
  the energy beyond 21 X0 leaks.
* **π+**: a MIP track (≈ 7 MeV per X0, Landau-like log-normal spread) until a nuclear
  interaction after an Exp(31 X0) path (about half interact inside); then a π0 (electromagnetic)
  part split into 1–5 sub-showers at random lateral offsets, and a broad, sparse hadronic part
  with half of its energy invisible. π+ showers are therefore sparser, broader and more
  irregular than e+/γ, with a large fraction of MIP-only showers.
* **Lateral profile**: per layer a core + halo + tail of three Gaussians whose widths grow with
  depth, times a per-shower width factor; cell fractions are exact integrals over each cell.
* **Sampling fluctuations and sparsity**: a cell with expected energy μ gets
  ``n ~ Poisson(μ h)`` hits of Gamma-distributed energy (mean ``1/h``); ``n = 0`` leaves it
  exactly empty. ``h`` = 0.1 hits/MeV (10 %/√E) for electromagnetic, 0.02 for hadronic deposits.
* ``overflow`` holds the energy falling outside each layer's 480 mm × 480 mm image.

Two independent samples (different seeds) are draws from the same distribution, which the
two-sample classifier test in tests/calo checks (AUC 0.50 ± 0.02).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from flowctl.data.calo import CALOGAN_LAYERS, Showers, write_calogan

__all__ = ["GEOMETRY", "PARTICLES", "generate", "write"]

PARTICLES = ("eplus", "gamma", "piplus")

#: Per layer: (row size, column size) in mm; rows × columns from CALOGAN_LAYERS.
GEOMETRY: tuple[tuple[float, float], ...] = ((160.0, 5.0), (40.0, 40.0), (40.0, 80.0))
#: Layer boundaries in radiation lengths (90 / 347 / 43 mm of Pb-LAr).
X0_EDGES = np.array([0.0, 3.0, 19.0, 21.0])
E_CRIT_MEV = 7.4
LAMBDA_X0 = 31.0
MIP_MEV_PER_X0 = 7.0
#: Lateral core widths (mm) per layer and the core/halo/tail mixture.
CORE_MM = np.array([4.0, 12.0, 24.0])
MIX_W = np.array([0.72, 0.22, 0.06])
MIX_S = np.array([1.0, 3.0, 9.0])
HITS_PER_MEV_EM = 0.1
HITS_PER_MEV_HAD = 0.02


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def gamma_cdf(shape: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Regularised lower incomplete gamma P(shape, x), with x <= 0 -> 0."""
    xs = np.maximum(x, 0.0)
    return torch.special.gammainc(_t(shape), _t(xs)).numpy()


def _phi(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + torch.special.erf(_t(x) / math.sqrt(2.0)).numpy())


def _edges(n: int, size: float) -> np.ndarray:
    return (np.arange(n + 1) - n / 2.0) * size


def _cell_fractions(layer: int, cx: np.ndarray, cy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Fraction of a 2-D Gaussian (centre ``[N]`` mm, width ``[N]`` mm) in each cell
    ``[N, rows, cols]``."""
    rows, cols = CALOGAN_LAYERS[layer]
    ry, rx = GEOMETRY[layer]
    ey, ex = _edges(rows, ry), _edges(cols, rx)
    fy = np.diff(_phi((ey[None, :] - cy[:, None]) / sigma[:, None]), axis=1)
    fx = np.diff(_phi((ex[None, :] - cx[:, None]) / sigma[:, None]), axis=1)
    return fy[:, :, None] * fx[:, None, :]


def _lateral(layer: int, cx: np.ndarray, cy: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Core + halo + tail profile ``[N, rows, cols]`` (sums to < 1: the rest overflows)."""
    out = 0.0
    for w, s in zip(MIX_W, MIX_S):
        out = out + w * _cell_fractions(layer, cx, cy, width * s)
    return out  # type: ignore[return-value]


def _deposit(mu: np.ndarray, hits_per_mev: float, shape_k: float,
             rng: np.random.Generator) -> np.ndarray:
    """Compound Poisson-Gamma fluctuation of expected energies ``mu`` (MeV), exact zeros."""
    n = rng.poisson(np.maximum(mu, 0.0) * hits_per_mev)
    e = rng.gamma(np.maximum(n * shape_k, 1e-300), 1.0 / (hits_per_mev * shape_k))
    return np.where(n > 0, e, 0.0)


#: Scale b (per X0) of the Gamma longitudinal profile of an EM shower.
EM_PROFILE_B = 0.5


def em_profile_shape(e_mev: np.ndarray, c: float, rng: np.random.Generator,
                     e_crit_mev: float = E_CRIT_MEV) -> np.ndarray:
    """Shape ``a [N]`` of the Gamma longitudinal profile (scale ``EM_PROFILE_B`` per X0) of EM
    showers of energy ``e_mev [N]`` MeV: shower maximum ``ln(E/E_c) + c`` X0, smeared by 0.6 X0."""
    t_max = np.log(np.maximum(e_mev, 2 * e_crit_mev) / e_crit_mev) + c
    t_max = np.maximum(t_max + rng.normal(0.0, 0.6, len(e_mev)), 0.3)
    return EM_PROFILE_B * t_max + 1.0


def _em_profile(e_mev: np.ndarray, start: np.ndarray, c: float,
                rng: np.random.Generator) -> np.ndarray:
    """Fractions of an electromagnetic shower's energy in the three layers ``[N, 3]``."""
    a = em_profile_shape(e_mev, c, rng)
    cdf = np.stack([gamma_cdf(a, EM_PROFILE_B * (edge - start)) for edge in X0_EDGES], 1)
    return np.diff(cdf, axis=1)


def generate(particle: str, n: int, seed: int = 0, e_min: float = 1.0,
             e_max: float = 100.0) -> Showers:
    """``n`` showers of ``particle`` (eplus | gamma | piplus) with E_inc ~ U[e_min, e_max] GeV."""
    if particle not in PARTICLES:
        raise ValueError(f"unknown particle {particle!r}; expected one of {', '.join(PARTICLES)}")
    rng = np.random.default_rng([seed, PARTICLES.index(particle)])
    e_gev = rng.uniform(e_min, e_max, n)
    e_mev = e_gev * 1000.0
    cx, cy = rng.normal(0.0, 1.5, n), rng.normal(0.0, 1.5, n)
    width = np.exp(rng.normal(0.0, 0.12, n))
    images, overflow = [], np.zeros((n, 3))
    if particle in ("eplus", "gamma"):
        start = np.zeros(n) if particle == "eplus" else rng.exponential(9.0 / 7.0, n)
        frac = _em_profile(e_mev, start, -0.5 if particle == "eplus" else 0.5, rng)
        mu_layer = frac * e_mev[:, None]
        if particle == "eplus":  # ionisation of the primary before it showers
            mu_layer[:, 0] += MIP_MEV_PER_X0 * np.minimum(1.0, X0_EDGES[1])
        for i in range(3):
            prof = _lateral(i, cx, cy, CORE_MM[i] * width)
            mu = mu_layer[:, i, None, None] * prof
            images.append(_deposit(mu, HITS_PER_MEV_EM, 1.0, rng))
            out_mu = mu_layer[:, i] * (1.0 - prof.sum((1, 2)))
            overflow[:, i] = _deposit(out_mu, HITS_PER_MEV_EM, 1.0, rng)
    else:
        t_int = rng.exponential(LAMBDA_X0, n)
        interacts = t_int < X0_EDGES[-1]
        # MIP track up to the interaction point: length of the track in each layer (X0).
        track = np.clip(np.minimum(t_int, X0_EDGES[-1])[:, None] - X0_EDGES[None, :-1], 0.0,
                        np.diff(X0_EDGES)[None, :])
        mip = track * MIP_MEV_PER_X0 * rng.lognormal(0.0, 0.3, (n, 3))
        f_em = np.where(interacts, rng.uniform(0.05, 0.7, n), 0.0)
        em_frac = _em_profile(f_em * e_mev, t_int, 0.5, rng)  # π0 photons from t_int
        # Hadronic part: exponential deposition over one λ from t_int, half invisible.
        lam = LAMBDA_X0 * rng.uniform(0.5, 1.5, n)
        had_cdf = 1.0 - np.exp(-np.clip(X0_EDGES[None, :] - t_int[:, None], 0.0, None)
                               / lam[:, None])
        had_frac = np.diff(had_cdf, axis=1) * interacts[:, None]
        mu_em = em_frac * (f_em * e_mev)[:, None]
        mu_had = had_frac * (0.5 * (1.0 - f_em) * e_mev)[:, None]
        k = 5
        n_sub = np.minimum(1 + rng.poisson(1.2, n), k)
        share = rng.gamma(1.0, 1.0, (n, k)) * (np.arange(k)[None, :] < n_sub[:, None])
        share /= share.sum(1, keepdims=True)
        off = rng.normal(0.0, 35.0, (n, k, 2))
        off[:, 0] *= 0.3
        for i in range(3):
            em = 0.0
            for j in range(k):
                em = em + share[:, j, None, None] * _lateral(
                    i, cx + off[:, j, 0], cy + off[:, j, 1], 1.5 * CORE_MM[i] * width)
            had = _lateral(i, cx, cy, 4.0 * CORE_MM[i] * width * rng.uniform(0.7, 1.4, n))
            trk = _cell_fractions(i, cx, cy, np.full(n, 1.0))
            img = (_deposit(mu_em[:, i, None, None] * em, HITS_PER_MEV_EM, 1.0, rng)
                   + _deposit(mu_had[:, i, None, None] * had, HITS_PER_MEV_HAD, 0.5, rng)
                   + mip[:, i, None, None] * trk)
            images.append(img)
            out = (mu_em[:, i] * (1.0 - em.sum((1, 2)))
                   + mu_had[:, i] * (1.0 - had.sum((1, 2))))  # type: ignore[union-attr]
            overflow[:, i] = _deposit(out, HITS_PER_MEV_HAD, 0.5, rng)
    voxels = np.concatenate([im.reshape(n, -1) for im in images], 1)
    # A shower cannot deposit more than the particle brought in.
    tot = voxels.sum(1) + overflow.sum(1)
    scale = np.minimum(1.0, e_mev / np.maximum(tot, 1e-12))
    return Showers(e_gev, voxels * scale[:, None], CALOGAN_LAYERS, overflow * scale[:, None],
                   f"synthetic:{particle}", {"particle": particle, "seed": seed})


def write(path: str | Path, particle: str, n: int, seed: int = 0,
          chunk: int = 20000) -> Path:
    """Generate ``n`` showers in chunks and write them as one CaloGAN file."""
    parts = [generate(particle, min(chunk, n - i), seed=seed * 1000003 + i // chunk)
             for i in range(0, n, chunk)]
    s = Showers(np.concatenate([p.energy for p in parts]),
                np.concatenate([p.voxels for p in parts]), CALOGAN_LAYERS,
                np.concatenate([p.overflow for p in parts]), f"synthetic:{particle}")  # type: ignore[misc]
    return write_calogan(path, s, attrs={"particle": particle, "seed": seed,
                                         "generator": "flowctl.data.synth.calorimeter"})
