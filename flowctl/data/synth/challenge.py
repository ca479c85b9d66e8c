"""Synthetic showers written exactly like the CaloChallenge files (arXiv:2410.21611).

``python -m flowctl.data.synth.challenge --dataset ds1_photons --n 5000 --out F.h5``
writes ``incident_energies [N, 1]`` and ``showers [N, V]`` (both MeV, gzip) for one of the
shipped binnings (``ds1_photons`` 368 voxels, ``ds1_pions`` 533, ``ds2`` 6480, ``ds3`` 40500)
or any binning XML (``--binning FILE``). The real files cannot be downloaded here; these stand
in for them in tests and ``make caloflow-ds1-tiny`` etc.

It is a parametric toy, not a simulation. Each shower deposits *hits*:

* **Incident energies**: DS1: the 15 energies 2^8 ... 2^22 MeV with the challenge's relative
  counts (10k each up to 2^18 MeV, then 5k, 3k, 2k, 1k); DS2/DS3 and custom binnings:
  log-uniform in 1 GeV - 1 TeV.
* **Longitudinal**: every binned layer covers a depth interval (in radiation lengths X0;
  DS2/DS3: 45 layers of 0.8 X0; DS1: presampler, strips, middle, back, then the hadronic
  layers 12-14 far behind). Photons and electrons follow a Gamma profile with
  ``t_max = ln(E / E_c) + C`` and a per-shower depth fluctuation; photons convert after an
  Exp(9/7 X0) path. Pions leave a MIP track until a nuclear interaction after an Exp(31 X0)
  path; then an electromagnetic (pi0) part in 1-4 sub-showers at random offsets and a broad
  hadronic part with half of its energy invisible. Energy between or behind the binned
  layers is lost.
* **Lateral**: hits are 2-D Gaussian around the shower axis with a core + halo + tail
  mixture whose width grows with depth, times a per-shower width factor; each hit lands in
  the (alpha, r) bin of its position (alpha = atan2(y, x) in [-pi, pi)), hits beyond the
  last r edge are lost.
* **Fluctuations / sparsity**: a layer with expected energy mu gets Poisson(mu h) hits of
  Gamma-distributed energy (h capped so a shower has at most ``max_hits`` hits); voxels without
  hits are exactly 0. DS2/DS3 voxels below the readout threshold (15.15 keV) are zeroed.

Two files with different seeds are draws from one distribution (tests/calo check AUC ~ 0.5).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from flowctl.calo.geometry import Geometry, load_binning
from flowctl.data.calo import write_calochallenge
from flowctl.data.synth.calorimeter import EM_PROFILE_B, em_profile_shape, gamma_cdf

__all__ = ["DS1_ENERGIES_MEV", "generate", "main", "write"]

#: DS1 incident energies (MeV) and their relative event counts (Dataset_creation.ipynb).
DS1_ENERGIES_MEV = 2.0 ** np.arange(8, 23)
DS1_WEIGHTS = np.array([10] * 11 + [5, 3, 2, 1], np.float64)
E_CRIT_MEV = 10.0
LAMBDA_X0 = 31.0
MIP_MEV_PER_X0 = 7.0
#: Depth interval (X0) of DS1 layers by XML layer id.
DS1_DEPTH = {0: (0.0, 1.5), 1: (1.5, 6.0), 2: (6.0, 22.0), 3: (22.0, 25.0),
             12: (27.0, 80.0), 13: (80.0, 200.0), 14: (200.0, 260.0)}
MIX_W = np.array([0.75, 0.2, 0.05])
MIX_S = np.array([1.0, 3.0, 10.0])
DS23_THRESHOLD_MEV = 0.5e-3 / 0.033


def _depths(g: Geometry) -> np.ndarray:
    """``[L, 2]`` depth interval (X0) of each binned layer."""
    if g.dataset in ("1-photons", "1-pions") and all(i in DS1_DEPTH for i in g.layer_ids):
        return np.array([DS1_DEPTH[i] for i in g.layer_ids])
    if g.dataset in ("2", "3"):
        e = 0.8 * np.arange(len(g.layers) + 1)
        return np.stack([e[:-1], e[1:]], 1)
    e = np.linspace(0.0, 30.0, len(g.layers) + 1)
    return np.stack([e[:-1], e[1:]], 1)


def _core_mm(g: Geometry) -> float:
    """Core width of the lateral profile (mm): W/Si (DS2/3) is far denser than DS1's LAr."""
    return 2.0 if g.dataset in ("2", "3") else 12.0


def _em_fractions(e_mev: np.ndarray, start: np.ndarray, c: float, depth: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Fraction of an EM shower's energy in each layer ``[N, L]`` (Gamma profile, b = 0.5)."""
    a = em_profile_shape(e_mev, c, rng, E_CRIT_MEV)[:, None] * np.ones((1, len(depth)))
    b = EM_PROFILE_B
    lo = gamma_cdf(a, b * (depth[None, :, 0] - start[:, None]))
    hi = gamma_cdf(a, b * (depth[None, :, 1] - start[:, None]))
    return np.clip(hi - lo, 0.0, 1.0)


def _energies(g: Geometry, n: int, rng: np.random.Generator) -> np.ndarray:
    if g.dataset in ("1-photons", "1-pions"):
        return rng.choice(DS1_ENERGIES_MEV, n, p=DS1_WEIGHTS / DS1_WEIGHTS.sum())
    return 10.0 ** rng.uniform(3.0, 6.0, n)


def _bin_hits(g: Geometry, shower: np.ndarray, layer: np.ndarray, x: np.ndarray,
              y: np.ndarray, e: np.ndarray, n: int) -> np.ndarray:
    """Sum hit energies into voxels ``[n, V]`` (hits outside the binning are dropped)."""
    v = g.n_voxels
    flat = np.zeros(n * v)
    offsets = np.cumsum([0, *g.layer_sizes])
    r = np.hypot(x, y)
    alpha = np.arctan2(y, x)
    for k, lay in enumerate(g.layers):
        m = layer == k
        if not m.any():
            continue
        edges = np.asarray(lay.r_edges)
        rb = np.searchsorted(edges, r[m], side="right") - 1
        ab = np.floor((alpha[m] + math.pi) / (2 * math.pi) * lay.n_alpha).astype(np.int64)
        ab = np.clip(ab, 0, lay.n_alpha - 1)
        ok = (rb >= 0) & (rb < lay.n_r)
        idx = shower[m][ok] * v + offsets[k] + ab[ok] * lay.n_r + rb[ok]
        flat += np.bincount(idx, weights=e[m][ok], minlength=n * v)
    return flat.reshape(n, v)


def _hits(mu: np.ndarray, h: np.ndarray, rng: np.random.Generator, shape_k: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson(mu h) hits per (shower, layer) of Gamma energy with mean 1/h.

    ``mu [N, L]`` MeV, ``h [N]`` hits per MeV -> (shower index, layer index, energy) per hit.
    """
    counts = rng.poisson(np.maximum(mu, 0.0) * h[:, None])
    s_idx, l_idx = np.nonzero(counts)
    reps = counts[s_idx, l_idx]
    shower = np.repeat(s_idx, reps)
    layer = np.repeat(l_idx, reps)
    e = rng.gamma(shape_k, 1.0 / (shape_k * h[shower]))
    return shower, layer, e


def _place(shower: np.ndarray, layer: np.ndarray, sigma_layer: np.ndarray, cx: np.ndarray,
           cy: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """2-D positions (mm) of hits: core/halo/tail Gaussian around (cx, cy) of their shower."""
    comp = rng.choice(3, len(shower), p=MIX_W)
    s = sigma_layer[shower, layer] * MIX_S[comp]
    return cx[shower] + s * rng.standard_normal(len(s)), cy[shower] + s * rng.standard_normal(len(s))


def generate(g: Geometry, n: int, seed: int = 0, max_hits: int = 4000,
             energies_mev: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` showers on geometry ``g``: (incident energies ``[n]`` MeV, voxels ``[n, V]`` MeV).

    The particle comes from the binning (``photon``, ``pion``, ``electron``; anything else is
    treated as an electron).
    """
    rng = np.random.default_rng([seed, g.n_voxels])
    e_inc = np.asarray(energies_mev, np.float64) if energies_mev is not None \
        else _energies(g, n, rng)
    n = len(e_inc)
    depth = _depths(g)
    n_layers = len(depth)
    core = _core_mm(g)
    centre_sd = 0.1 * core
    cx, cy = rng.normal(0.0, centre_sd, n), rng.normal(0.0, centre_sd, n)
    width = np.exp(rng.normal(0.0, 0.12, n))
    t_mid = depth.mean(1)
    growth = 1.0 + 0.06 * t_mid  # lateral spread grows with depth
    sig = core * width[:, None] * growth[None, :]  # [N, L]
    parts = []
    if g.particle == "pion":
        t_int = rng.exponential(LAMBDA_X0, n)
        track = np.clip(np.minimum(t_int[:, None], depth[None, :, 1]) - depth[None, :, 0], 0.0,
                        None)
        mip = track * MIP_MEV_PER_X0 * rng.lognormal(0.0, 0.3, (n, n_layers))
        interacts = t_int < depth[-1, 1]
        f_em = np.where(interacts, rng.uniform(0.05, 0.7, n), 0.0)
        mu_em = _em_fractions(f_em * e_inc, t_int, 0.5, depth, rng) * (f_em * e_inc)[:, None]
        lam = LAMBDA_X0 * rng.uniform(0.8, 2.5, n)
        cdf = 1.0 - np.exp(-np.clip(depth[None, :, :] - t_int[:, None, None], 0.0, None)
                           / lam[:, None, None])
        mu_had = (cdf[..., 1] - cdf[..., 0]) * (0.5 * (1.0 - f_em) * e_inc * interacts)[:, None]
        h = np.minimum(0.1, 0.7 * max_hits / np.maximum((mu_em + mu_had).sum(1), 1.0))
        # pi0 sub-showers: 1-4 offsets; each EM hit picks one
        k = 4
        n_sub = np.minimum(1 + rng.poisson(1.0, n), k)
        share = rng.gamma(1.0, 1.0, (n, k)) * (np.arange(k)[None, :] < n_sub[:, None])
        share /= share.sum(1, keepdims=True)
        off = rng.normal(0.0, 3.0 * core, (n, k, 2))
        off[:, 0] *= 0.2
        s, lay, e = _hits(mu_em, h, rng, 1.0)
        u = rng.random(len(s))
        sub = (u[:, None] > np.cumsum(share, 1)[s][:, :-1]).sum(1)
        x, y = _place(s, lay, 1.3 * sig, cx + 0 * cx, cy, rng)
        parts.append((s, lay, x + off[s, sub, 0], y + off[s, sub, 1], e))
        s, lay, e = _hits(mu_had, 0.2 * h, rng, 0.5)
        x, y = _place(s, lay, 4.0 * sig, cx, cy, rng)
        parts.append((s, lay, x, y, e))
        s_idx, l_idx = np.nonzero(mip > 0)
        parts.append((s_idx, l_idx, cx[s_idx] + rng.normal(0, 0.5, len(s_idx)),
                      cy[s_idx] + rng.normal(0, 0.5, len(s_idx)), mip[s_idx, l_idx]))
    else:
        photon = g.particle == "photon"
        start = rng.exponential(9.0 / 7.0, n) if photon else np.zeros(n)
        mu = _em_fractions(e_inc, start, 0.5 if photon else -0.5, depth, rng) * e_inc[:, None]
        h = np.minimum(0.1, max_hits / np.maximum(mu.sum(1), 1.0))
        s, lay, e = _hits(mu, h, rng, 1.0)
        x, y = _place(s, lay, sig, cx, cy, rng)
        parts.append((s, lay, x, y, e))
    cat = [np.concatenate(p) for p in zip(*parts)]
    showers = _bin_hits(g, cat[0], cat[1], cat[2], cat[3], cat[4], n)
    scale = np.minimum(1.0, e_inc / np.maximum(showers.sum(1), 1e-12))
    showers *= scale[:, None]
    if g.dataset in ("2", "3"):
        showers[showers < DS23_THRESHOLD_MEV] = 0.0
    return e_inc, showers


def write(path: str | Path, binning: str | Path, n: int, seed: int = 0, chunk: int = 2000,
          dtype: str = "float32") -> Path:
    """Generate ``n`` showers for ``binning`` (a shipped name or a file) in chunks and write
    them as one CaloChallenge file."""
    g = load_binning(binning)
    es, ss = [], []
    for i in range(0, n, chunk):
        e, s = generate(g, min(chunk, n - i), seed=seed * 1000003 + i // chunk)
        es.append(e)
        ss.append(s.astype(dtype))
    return write_calochallenge(path, np.concatenate(es), np.concatenate(ss), dtype,
                           attrs={"generator": "flowctl.data.synth.challenge",
                                  "binning": str(binning), "seed": seed})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flowctl.data.synth.challenge",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ds1_photons",
                    help="shipped binning: ds1_photons | ds1_pions | ds2 | ds3")
    ap.add_argument("--binning", default=None, help="a binning XML instead of --dataset")
    ap.add_argument("--n", type=int, default=10000, help="showers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--out", required=True, help="output HDF5 file")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    t0 = time.perf_counter()
    try:
        path = write(args.out, args.binning or args.dataset, args.n, args.seed,
                     dtype=args.dtype)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {args.n} showers ({args.binning or args.dataset}) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
