"""A synthetic LHC-Olympics-like dijet sample written in the R&D features file's exact format.

It stands in for ``events_anomalydetection_v2.features.h5`` (Pythia8 + Delphes; it can be
downloaded, see data/README.md) with a fast parametric model. What it reproduces
qualitatively (all masses GeV in the file):

* **QCD background**: a falling mjj spectrum (Pareto, index :data:`MJJ_INDEX`, from
  :data:`MJJ_MIN_TEV` with a smeared turn-on); jet masses log-normal with a median that grows
  with mjj; broad one-prong-like τ21 (median ≈ 0.78) that falls slowly with jet mass and
  mjj, so the auxiliary features are mildly correlated with mjj as in the real data.
* **Signal** W′(3.5 TeV) → X(500 GeV) Y(100 GeV), both → qq: mjj peaked at 3.5 TeV with a
  low-side radiative tail (≈ 75 % in the 3.3–3.7 TeV SR, as in the real sample), jet masses
  near 100 and 500 GeV (15 % / 25 % resolution) with low-mass tails, two-prong τ21
  (mean ≈ 0.38), overlapping the background's tails.
* Jets are built as two back-to-back massive jets in the dijet rest frame, boosted along z,
  so ``px py pz m`` reproduce mjj exactly; j1/j2 are in random order (equal pT).
* **Shifted variant** (``shift > 0``; CATHODE's robustness test, arXiv:2109.00546): the lighter
  jet mass gets ``+shift·mjj`` and the heavier ``+2·shift·mjj`` (so ``mj1 += shift·mjj`` and
  ``Δm += shift·mjj`` in the derived features), for background and signal alike.

**Worlds** (``world=``, :data:`WORLDS`; ``--world``): ``default`` is the model above;
``correlated`` and ``mixture`` are independent variations (other mjj slope, background shapes
and correlations, signal masses and widths) so that methods and presets are not tuned to one
generator; see :data:`WORLDS` for what each changes. The file format and features are the same.

Signal is injected at overall S/B ``signal_fraction`` (signal events per background event;
CATHODE's default is 1000 per 1M, 0.001, which gives S/B ≈ 0.6 % in the SR). Rows are sorted
by label (background first), like the real file. Files (see :func:`write_all`)::

    events_anomalydetection_v2.features.h5               background + injected signal
    events_anomalydetection_qcd_extra_inneronly_features.h5   extra QCD, SR only
    events_anomalydetection_signal_extra.features.h5     extra signal (supervised reference)

``python -m flowctl.data.synth.lhco --out data/lhco --n 1000000 --signal-fraction 0.001``
``python -m flowctl.data.synth.lhco --out data/lhco/correlated --world correlated``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowctl.data.lhco import (
    RAW_COLUMNS,
    SR,
    load_lhco,
    signal_region_mask,
    write_pandas_fixed,
    write_pandas_table,
)

__all__ = ["FILES", "WORLDS", "background", "signal", "write_all"]

MJJ_MIN_TEV = 2.5
MJJ_INDEX = 4.5
M_W, M_X, M_Y = 3.5, 500.0, 100.0
# Difficulty. Chosen so that a supervised classifier on the 4 CATHODE features reaches a max
# SIC of about 25 (mean SIC ~20 at TPR 0.2) on 100k SR background events, near the real
# R&D data's 17.65 (reference/anomaly.md §2.5); sharper shapes made every method saturate at
# the FPR floor (max SIC > 140), which cannot tell methods apart.
QCD_MASS_SIGMA = 1.0            # log-normal width of QCD jet masses
QCD_TAU21_K = 4.0               # Beta concentration of QCD tau21 (smaller: broader)
SIG_MASS_RES = (0.15, 0.25)     # relative Gaussian resolution of m_X, m_Y
SIG_TAU21_BETA = (2.5, 4.0)     # signal tau21 ~ Beta(a, b): mean 0.38
#: Selectable synthetic worlds (``world=``): ``default`` (above), ``correlated`` (background
#: jet masses and τ21 strongly correlated with mjj and with each other; a W′ → X(450) Y(150)
#: signal with broad masses (25 %, 30 %) and two-prong-ish τ21 (mean 0.33): S/B ≈ 0.63 %,
#: S/√B ≈ 1.9 in the SR at the default injection, supervised max SIC ≈ 20; issue 20's
#: world) and ``mixture`` (quark/gluon-like background populations whose mix moves with mjj;
#: a lighter X(250) Y(80) signal with τ21 mean 0.43).
WORLDS = ("default", "correlated", "mixture")
COR_MJJ_INDEX = 6.0
COR_MASS_M0 = 85.0              # GeV, median QCD jet mass at mjj = 3.5 TeV
COR_MASS_POWER = 3.0            # median jet mass ~ mjj^3
COR_MASS_SIGMA = 0.8
COR_MASS_RHO = 0.4              # correlation of the two jets' log-masses
COR_TAU21_K = 5.0
MIX_MJJ_INDEX = 5.0
WORLD_SIGNAL: dict[str, dict[str, Any]] = {
    "correlated": {"mjj_res": 0.05, "tail": 0.28, "tail_tev": 0.4, "m_x": 450.0, "m_y": 150.0,
                   "res": (0.25, 0.30), "low": 0.2, "tau21": (2.0, 4.0)},
    "mixture": {"mjj_res": 0.035, "tail": 0.25, "tail_tev": 0.35, "m_x": 250.0, "m_y": 80.0,
                "res": (0.20, 0.25), "low": 0.2, "tau21": (3.0, 4.0)},
}
FILES = {
    "data": "events_anomalydetection_v2.features.h5",
    "extra_bkg": "events_anomalydetection_qcd_extra_inneronly_features.h5",
    "extra_sig": "events_anomalydetection_signal_extra.features.h5",
}


def _mjj_background(rng: np.random.Generator, n: int,
                    window: tuple[float, float] | None = None,
                    index: float = MJJ_INDEX) -> np.ndarray:
    """Falling mjj ``[n]`` in TeV: Pareto(``index``) from MJJ_MIN_TEV times a 4 % smearing
    (turn-on). ``window`` samples the Pareto only inside it (the smearing is then skipped)."""
    if window is None:
        u = rng.random(n)
        m = MJJ_MIN_TEV * (1.0 - u) ** (-1.0 / index)
        return m * np.exp(0.04 * rng.standard_normal(n))
    lo, hi = window
    c_lo, c_hi = 1 - (MJJ_MIN_TEV / lo) ** index, 1 - (MJJ_MIN_TEV / hi) ** index
    u = c_lo + (c_hi - c_lo) * rng.random(n)
    m = MJJ_MIN_TEV * (1.0 - u) ** (-1.0 / index)
    return np.clip(m, np.nextafter(lo, hi), np.nextafter(hi, lo))


def _taus(rng: np.random.Generator, tau21: np.ndarray, mj: np.ndarray) -> np.ndarray:
    """τ1, τ2, τ3 ``[n, 3]`` with the given τ21 ``[n]``; τ1 grows with jet mass ``[n]`` GeV."""
    n = len(tau21)
    tau1 = 0.08 * (mj / 100.0) ** 0.5 * np.exp(0.3 * rng.standard_normal(n))
    tau32 = rng.beta(8.0, 3.0, n)
    tau2 = tau21 * tau1
    return np.stack([tau1, tau2, tau32 * tau2], axis=1)


def _assemble(rng: np.random.Generator, mjj: np.ndarray, ma: np.ndarray, mb: np.ndarray,
              ta: np.ndarray, tb: np.ndarray, label: float, shift: float) -> np.ndarray:
    """Raw rows ``[n, 15]`` (RAW_COLUMNS, GeV) for jets of masses ``ma, mb`` GeV and τ21
    ``ta, tb`` at dijet mass ``mjj`` TeV; j1/j2 order random."""
    n = len(mjj)
    lo_first = ma <= mb
    if shift:
        mlo, mhi = np.minimum(ma, mb), np.maximum(ma, mb)
        mlo = mlo + shift * mjj * 1000.0
        mhi = mhi + 2.0 * shift * mjj * 1000.0
        ma, mb = np.where(lo_first, mlo, mhi), np.where(lo_first, mhi, mlo)
    M = mjj * 1000.0
    # keep the jets physical: m_a + m_b < M
    scale = np.minimum(1.0, 0.9 * M / (ma + mb))
    ma, mb = ma * scale, mb * scale
    pstar = np.sqrt((M**2 - (ma + mb) ** 2) * (M**2 - (ma - mb) ** 2)) / (2.0 * M)
    cos = rng.uniform(-0.6, 0.6, n)
    sin = np.sqrt(1.0 - cos**2)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    px, py, pz = pstar * sin * np.cos(phi), pstar * sin * np.sin(phi), pstar * cos
    ea, eb = np.sqrt(pstar**2 + ma**2), np.sqrt(pstar**2 + mb**2)
    y = 0.5 * rng.standard_normal(n)
    ch, sh = np.cosh(y), np.sinh(y)
    pza, pzb = ch * pz + sh * ea, ch * (-pz) + sh * eb
    ja = np.stack([px, py, pza, ma, *_taus(rng, ta, ma).T], axis=1)
    jb = np.stack([-px, -py, pzb, mb, *_taus(rng, tb, mb).T], axis=1)
    swap = rng.random(n) < 0.5
    j1 = np.where(swap[:, None], jb, ja)
    j2 = np.where(swap[:, None], ja, jb)
    return np.concatenate([j1, j2, np.full((n, 1), label)], axis=1)


def background(rng: np.random.Generator, n: int, shift: float = 0.0,
               window: tuple[float, float] | None = None,
               world: str = "default") -> np.ndarray:
    """QCD-like dijets of ``world`` (:data:`WORLDS`): raw rows ``[n, 15]`` (GeV), label 0."""
    if _world(world) == "correlated":
        return _background_correlated(rng, n, shift, window)
    if world == "mixture":
        return _background_mixture(rng, n, shift, window)
    mjj = _mjj_background(rng, n, window)
    rel = mjj / M_W

    def mass() -> np.ndarray:
        return np.clip(60.0 * rel**1.5 * np.exp(QCD_MASS_SIGMA * rng.standard_normal(n)), 5.0, None)

    def tau21(m: np.ndarray) -> np.ndarray:
        mean = np.clip(0.72 - 0.04 * np.log(m / 60.0) - 0.04 * (rel - 1.0), 0.35, 0.9)
        return rng.beta(mean * QCD_TAU21_K, (1.0 - mean) * QCD_TAU21_K)

    ma, mb = mass(), mass()
    return _assemble(rng, mjj, ma, mb, tau21(ma), tau21(mb), 0.0, shift)


def signal(rng: np.random.Generator, n: int, shift: float = 0.0,
           world: str = "default") -> np.ndarray:
    """W′(3.5 TeV) → X Y dijets of ``world`` (default: X 500 GeV, Y 100 GeV): raw rows
    ``[n, 15]`` (GeV), label 1."""
    if _world(world) != "default":
        return _signal_world(rng, n, shift, WORLD_SIGNAL[world])
    mjj = M_W * np.exp(0.035 * rng.standard_normal(n))
    tail = rng.random(n) < 0.25
    mjj = np.where(tail, mjj - rng.exponential(0.35, n), mjj)
    mjj = np.clip(mjj, 1.5, None)

    def mass(m0: float, res: float) -> np.ndarray:
        m = m0 * (1.0 + res * rng.standard_normal(n))
        low = rng.random(n) < 0.15          # out-of-cone radiation: low-mass tail
        return np.clip(np.where(low, m * rng.uniform(0.4, 1.0, n), m), 5.0, None)

    mx, my = mass(M_X, SIG_MASS_RES[0]), mass(M_Y, SIG_MASS_RES[1])
    t = rng.beta(*SIG_TAU21_BETA, (2, n))
    return _assemble(rng, mjj, mx, my, t[0], t[1], 1.0, shift)


# --------------------------------------------------------------------------- other worlds


def _world(world: str) -> str:
    if world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {world!r}")
    return world


def _beta_mean(rng: np.random.Generator, mean: np.ndarray, k: float) -> np.ndarray:
    """Beta draws ``[n]`` with the given means ``[n]`` and concentration ``k``."""
    mean = np.clip(mean, 0.05, 0.95)
    return rng.beta(mean * k, (1.0 - mean) * k)


def _background_correlated(rng: np.random.Generator, n: int, shift: float,
                           window: tuple[float, float] | None) -> np.ndarray:
    """``correlated`` world QCD: a steeper mjj spectrum (Pareto index :data:`COR_MJJ_INDEX`);
    jet masses log-normal around a median ``COR_MASS_M0·(mjj/3.5 TeV)^COR_MASS_POWER`` (so
    it changes by ~40 % across the SR), the two jets' log-masses correlated (ρ =
    :data:`COR_MASS_RHO`); τ21 falls with the jet's mass relative to that median and with
    mjj, so the conditional shape of every feature moves with mjj."""
    mjj = _mjj_background(rng, n, window, index=COR_MJJ_INDEX)
    rel = mjj / M_W
    m0 = COR_MASS_M0 * rel**COR_MASS_POWER
    z = rng.standard_normal((3, n))
    c = np.sqrt(1.0 - COR_MASS_RHO**2)
    ma = np.clip(m0 * np.exp(COR_MASS_SIGMA * (COR_MASS_RHO * z[0] + c * z[1])), 5.0, None)
    mb = np.clip(m0 * np.exp(COR_MASS_SIGMA * (COR_MASS_RHO * z[0] + c * z[2])), 5.0, None)

    def tau21(m: np.ndarray) -> np.ndarray:
        return _beta_mean(rng, 0.70 - 0.06 * np.log(m / m0) - 0.25 * (rel - 1.0), COR_TAU21_K)

    return _assemble(rng, mjj, ma, mb, tau21(ma), tau21(mb), 0.0, shift)


def _background_mixture(rng: np.random.Generator, n: int, shift: float,
                        window: tuple[float, float] | None) -> np.ndarray:
    """``mixture`` world QCD: each jet is quark-like (lighter, τ21 ≈ 0.55) or gluon-like
    (heavier, τ21 ≈ 0.80), the quark fraction rising with mjj (0.3 at 2.5 TeV to 0.6 at
    4.5 TeV); the two jets' types are drawn independently, so the features are bimodal and
    their mixture weights move with mjj."""
    mjj = _mjj_background(rng, n, window, index=MIX_MJJ_INDEX)
    rel = mjj / M_W
    f_quark = np.clip(0.3 + 0.15 * (mjj - 2.5), 0.3, 0.6)

    def jet() -> tuple[np.ndarray, np.ndarray]:
        quark = rng.random(n) < f_quark
        med = np.where(quark, 35.0, 80.0) * rel**1.5
        m = np.clip(med * np.exp(np.where(quark, 0.6, 0.8) * rng.standard_normal(n)), 5.0, None)
        return m, _beta_mean(rng, np.where(quark, 0.55, 0.80), 6.0)

    (ma, ta), (mb, tb) = jet(), jet()
    return _assemble(rng, mjj, ma, mb, ta, tb, 0.0, shift)


def _signal_world(rng: np.random.Generator, n: int, shift: float,
                  p: dict[str, Any]) -> np.ndarray:
    """W′ → X Y signal with the parameters ``p`` of :data:`WORLD_SIGNAL`: mjj Gaussian
    (relative width ``mjj_res``) with a low-side exponential tail (fraction ``tail``, mean
    ``tail_tev``); jet masses ``m_x, m_y`` GeV with relative resolutions ``res`` and a
    low-mass tail (fraction ``low``); τ21 ~ Beta(``tau21``)."""
    mjj = M_W * np.exp(p["mjj_res"] * rng.standard_normal(n))
    tail = rng.random(n) < p["tail"]
    mjj = np.clip(np.where(tail, mjj - rng.exponential(p["tail_tev"], n), mjj), 1.5, None)

    def mass(m0: float, res: float) -> np.ndarray:
        m = m0 * (1.0 + res * rng.standard_normal(n))
        low = rng.random(n) < p["low"]
        return np.clip(np.where(low, m * rng.uniform(0.3, 1.0, n), m), 5.0, None)

    mx, my = mass(p["m_x"], p["res"][0]), mass(p["m_y"], p["res"][1])
    t = rng.beta(*p["tau21"], (2, n))
    return _assemble(rng, mjj, mx, my, t[0], t[1], 1.0, shift)


def _write(path: Path, raw: np.ndarray, fmt: str = "fixed") -> Path:
    cols = {c: raw[:, j] for j, c in enumerate(RAW_COLUMNS)}
    if fmt == "table":
        return write_pandas_table(path, cols)
    if fmt != "fixed":
        raise ValueError(f"fmt must be 'fixed' or 'table', got {fmt!r}")
    return write_pandas_fixed(path, cols)


def write_all(out: str | Path, n: int, signal_fraction: float = 0.001, seed: int = 0,
              shift: float = 0.0, n_extra_bkg: int | None = None,
              n_extra_sig: int | None = None, fmt: str = "fixed",
              world: str = "default") -> dict[str, Path]:
    """Write the three :data:`FILES` under ``out``: ``n`` background events with
    ``round(signal_fraction·n)`` signal injected, ``n_extra_bkg`` (default ``0.3·n``) SR-only
    QCD and ``n_extra_sig`` (default ``0.06·n``) signal, in pandas' ``fmt`` layout
    (``fixed``, the R&D file's, or ``table``), from ``world`` (:data:`WORLDS`). Same seed and
    world → same events for any ``shift``."""
    _world(world)
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_sig = round(signal_fraction * n)
    n_eb = int(0.3 * n) if n_extra_bkg is None else n_extra_bkg
    n_es = int(0.06 * n) if n_extra_sig is None else n_extra_sig
    data = np.concatenate([background(rng, n, shift, world=world),
                           signal(rng, n_sig, shift, world=world)])
    return {
        "data": _write(out / FILES["data"], data, fmt),
        "extra_bkg": _write(out / FILES["extra_bkg"],
                            background(rng, n_eb, shift, window=SR, world=world), fmt),
        "extra_sig": _write(out / FILES["extra_sig"], signal(rng, n_es, shift, world=world), fmt),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flowctl.data.synth.lhco",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/lhco", help="output folder (default data/lhco)")
    ap.add_argument("--n", type=int, default=1_000_000, help="background events")
    ap.add_argument("--signal-fraction", type=float, default=0.001,
                    help="injected signal events per background event (default 0.001)")
    ap.add_argument("--shift", type=float, default=0.0,
                    help="mass-mjj correlation of the shifted variant (CATHODE uses 0.1)")
    ap.add_argument("--n-extra-bkg", type=int, default=None, help="SR-only QCD (default 0.3 n)")
    ap.add_argument("--n-extra-sig", type=int, default=None, help="extra signal (0.06 n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", choices=WORLDS, default="default",
                    help="background/signal shapes (default, correlated, mixture)")
    ap.add_argument("--format", choices=("fixed", "table"), default="fixed",
                    help="pandas HDF5 layout (the R&D file is 'fixed')")
    args = ap.parse_args(argv)
    if args.n < 1 or not 0.0 <= args.signal_fraction <= 10.0:
        ap.error("--n must be >= 1 and --signal-fraction in [0, 10]")
    t0 = time.perf_counter()
    paths = write_all(args.out, args.n, args.signal_fraction, args.seed, args.shift,
                      args.n_extra_bkg, args.n_extra_sig, args.format, args.world)
    x = load_lhco(paths["data"])
    sr = signal_region_mask(x[:, 0])
    s, b = int(x[sr, 5].sum()), int(sr.sum() - x[sr, 5].sum())
    print(f"{paths['data']}: {len(x)} events ({int(x[:, 5].sum())} signal); SR {SR[0]}-{SR[1]} "
          f"TeV: {s} S / {b} B, S/B = {s / max(b, 1):.3%}, S/sqrt(B) = {s / max(b, 1)**0.5:.2f}; "
          f"extra files in {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
