"""A synthetic Gaia sky patch with an injected GD-1-like stellar stream, in the archive format.

It stands in for a Via Machinae patch (reference/anomaly.md §4; the real ones are Gaia DR2/DR3
queries of a 15°-radius cap) with a fast parametric model, generated in the patch frame
(φ, λ, μ_φ*, μ_λ) and rotated to ICRS (``ra dec pmra pmdec``) around ``center``:

* **Field** (smooth): positions uniform on the cap with a density gradient along λ (as towards
  the Galactic plane); proper motions a mixture of a disk-like (σ ≈ 4 mas/yr), a halo-like
  (σ ≈ 8) and a nearby, fast component (σ ≈ 14); magnitudes ``N(<g) ∝ 10^{0.35 g}`` from
  ``g = 12`` to :data:`G_LIMIT`; colours a red disk-dwarf sequence plus a bluer halo turn-off
  population; parallaxes that grow with proper motion (nearby stars move fast).
* **Stream** (cold, thin): a curved track ``λ = 1.5 + 0.04 φ − 0.006 φ²`` deg of Gaussian
  width :data:`STREAM_WIDTH` across the whole patch, coherent proper motion
  ``μ_φ* ≈ −6.5 + 0.1 φ``, ``μ_λ ≈ −12.5 + 0.04 φ`` mas/yr (dispersion 0.2 mas/yr), an
  old, metal-poor isochrone-like colour–magnitude sequence at 8 kpc (turn-off g ≈ 18.6,
  b−r ≈ 0.62; main sequence redder below it, subgiant/giant branch above it) and
  parallax 0.125 mas.
* Gaia-like errors that grow with ``g``: proper motions ``0.06·10^{0.26 (g−15)}`` mas/yr
  (≈ 1.2 at g = 20), parallax ``0.04·10^{0.26 (g−15)}`` mas, colour ``0.005·10^{0.2 (g−15)}``.

Columns written: ``source_id ra dec parallax pmra pmdec phot_g_mean_mag bp_rp stream``
(``stream`` = 1 for injected stars; the reader keeps it for evaluation only). Rows are
shuffled. ``python -m flowctl.data.synth.gaia --out data/gaia --n-field 400000 --n-stream 1000``
writes ``data/gaia/patch.h5`` (``--format csv`` for a CSV export).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowctl.data.gaia import fiducial_mask, from_patch_frame, load_patch, write_gaia

__all__ = ["CENTER", "G_LIMIT", "STREAM_PM", "field_stars", "generate", "stream_stars", "write"]

#: Default patch centre (ra, dec) deg: the "default patch from Via Machinae" (l 207, b 50.2).
CENTER: tuple[float, float] = (148.6, 24.2)
RADIUS = 15.0
G_MIN, G_LIMIT = 12.0, 20.8
STREAM_WIDTH = 0.25                     # deg, Gaussian σ across the track
STREAM_PM: tuple[float, float] = (-6.5, -12.5)   # (μ_φ*, μ_λ) at φ = 0, mas/yr
STREAM_PM_GRAD: tuple[float, float] = (0.1, 0.04)  # mas/yr per deg of φ
STREAM_PM_DISP = 0.2
G_TURNOFF, COLOR_TURNOFF = 18.6, 0.62


def _pm_err(g: np.ndarray) -> np.ndarray:
    return 0.06 * 10.0 ** (0.26 * (g - 15.0))


def _cap(rng: np.random.Generator, n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``(φ, λ)`` deg uniform on the cap of ``radius`` deg around (0, 0)."""
    cosd = rng.uniform(np.cos(np.radians(radius)), 1.0, n)
    d = np.arccos(cosd)
    az = rng.uniform(0.0, 2.0 * np.pi, n)
    x, y, z = np.cos(d), np.sin(d) * np.cos(az), np.sin(d) * np.sin(az)
    return np.degrees(np.arctan2(y, x)), np.degrees(np.arcsin(z))


def _magnitudes(rng: np.random.Generator, n: int, slope: float, lo: float = G_MIN,
                hi: float = G_LIMIT) -> np.ndarray:
    """``[n]`` g mag with ``dN/dg ∝ 10^{slope g}`` on ``[lo, hi]`` (inverse CDF)."""
    k = slope * np.log(10.0)
    u = rng.random(n)
    return lo + np.log1p(u * np.expm1(k * (hi - lo))) / k


def field_stars(rng: np.random.Generator, n: int, radius: float = RADIUS) -> dict[str, np.ndarray]:
    """Smooth field population in the patch frame: ``{phi lam pmphi pmlam g bp_rp parallax}``
    ``[n]`` (deg, mas/yr, mag, mas)."""
    # density gradient exp(-λ/25): rejection sampling on the uniform cap
    phi, lam = np.empty(0), np.empty(0)
    while len(phi) < n:
        p, la = _cap(rng, 2 * n, radius)
        keep = rng.random(2 * n) < np.exp(-(la + radius) / 25.0)
        phi, lam = np.concatenate([phi, p[keep]]), np.concatenate([lam, la[keep]])
    phi, lam = phi[:n], lam[:n]
    comp = rng.choice(3, size=n, p=[0.55, 0.33, 0.12])      # disk, halo, nearby
    mean = np.array([[-2.0, -3.0], [-3.0, -5.0], [-4.0, -6.0]])[comp]
    sig = np.array([4.0, 8.0, 14.0])[comp]
    pm = mean + sig[:, None] * rng.standard_normal((n, 2))
    g = _magnitudes(rng, n, 0.35)
    err = _pm_err(g)
    pm += err[:, None] * rng.standard_normal((n, 2))
    disk_color = 0.95 + 0.06 * (g - 18.0) + 0.28 * rng.standard_normal(n)
    halo_color = 0.72 + 0.03 * (g - 18.0) + 0.12 * rng.standard_normal(n)
    color = np.where(comp == 1, halo_color, disk_color)
    color += 0.005 * 10.0 ** (0.2 * (g - 15.0)) * rng.standard_normal(n)
    speed = np.hypot(pm[:, 0], pm[:, 1])
    plx = 0.05 + 0.03 * speed * rng.lognormal(0.0, 0.5, n)
    plx += 0.04 * 10.0 ** (0.26 * (g - 15.0)) * rng.standard_normal(n)
    return {"phi": phi, "lam": lam, "pmphi": pm[:, 0], "pmlam": pm[:, 1], "g": g,
            "bp_rp": np.clip(color, -0.5, 4.0), "parallax": plx}


def stream_track(phi: np.ndarray) -> np.ndarray:
    """Centre line of the stream ``λ(φ)`` deg."""
    return 1.5 + 0.04 * phi - 0.006 * phi**2


def stream_color(g: np.ndarray) -> np.ndarray:
    """Isochrone-like b−r ``[N]`` of the stream at magnitude ``g`` ``[N]``: main sequence
    below the turn-off, subgiant then giant branch above it."""
    below = np.clip(g - G_TURNOFF, 0.0, None)
    above = np.clip(G_TURNOFF - g, 0.0, None)
    return (COLOR_TURNOFF + 0.15 * below + 0.28 * (1.0 - np.exp(-above / 0.4))
            + 0.05 * np.clip(17.6 - g, 0.0, None))


def stream_stars(rng: np.random.Generator, n: int, radius: float = RADIUS
                 ) -> dict[str, np.ndarray]:
    """Thin, cold GD-1-like stream in the patch frame (same keys as :func:`field_stars`)."""
    out: dict[str, list[np.ndarray]] = {}
    got = 0
    while got < n:
        m = 2 * (n - got) + 16
        phi = rng.uniform(-radius, radius, m)
        # density modulation along the track (clumps and a gap), as in real streams
        keep = rng.random(m) < 0.6 + 0.4 * np.cos(phi / 2.3) ** 2
        lam = stream_track(phi) + STREAM_WIDTH * rng.standard_normal(m)
        inside = np.cos(np.radians(lam)) * np.cos(np.radians(phi)) >= np.cos(np.radians(radius))
        keep &= inside
        for k, v in (("phi", phi[keep]), ("lam", lam[keep])):
            out.setdefault(k, []).append(v)
        got += int(keep.sum())
    phi = np.concatenate(out["phi"])[:n]
    lam = np.concatenate(out["lam"])[:n]
    g = _magnitudes(rng, n, 0.3, lo=15.5)
    err = _pm_err(g)
    pmphi = (STREAM_PM[0] + STREAM_PM_GRAD[0] * phi
             + np.hypot(STREAM_PM_DISP, err) * rng.standard_normal(n))
    pmlam = (STREAM_PM[1] + STREAM_PM_GRAD[1] * phi
             + np.hypot(STREAM_PM_DISP, err) * rng.standard_normal(n))
    color = stream_color(g) + np.hypot(0.02, 0.005 * 10.0 ** (0.2 * (g - 15.0))) \
        * rng.standard_normal(n)
    plx = 0.125 + 0.04 * 10.0 ** (0.26 * (g - 15.0)) * rng.standard_normal(n)
    return {"phi": phi, "lam": lam, "pmphi": pmphi, "pmlam": pmlam, "g": g, "bp_rp": color,
            "parallax": plx}


def generate(n_field: int, n_stream: int, seed: int = 0, center: Sequence[float] = CENTER,
             radius: float = RADIUS) -> dict[str, np.ndarray]:
    """Gaia-archive columns ``{source_id ra dec parallax pmra pmdec phot_g_mean_mag bp_rp
    stream}`` ``[n_field + n_stream]``, rows shuffled."""
    rng = np.random.default_rng(seed)
    f, s = field_stars(rng, n_field, radius), stream_stars(rng, n_stream, radius)
    both = {k: np.concatenate([f[k], s[k]]) for k in f}
    label = np.concatenate([np.zeros(n_field, np.int64), np.ones(n_stream, np.int64)])
    perm = rng.permutation(len(label))
    both = {k: v[perm] for k, v in both.items()}
    ra, dec, pmra, pmdec = from_patch_frame(both["phi"], both["lam"], both["pmphi"],
                                            both["pmlam"], center)
    source_id = rng.choice(2**50, size=len(label), replace=False).astype(np.int64) + 2**52
    return {"source_id": source_id, "ra": ra, "dec": dec, "parallax": both["parallax"],
            "pmra": pmra, "pmdec": pmdec, "phot_g_mean_mag": both["g"],
            "bp_rp": both["bp_rp"], "stream": label[perm]}


def write(path: str | Path, n_field: int, n_stream: int, seed: int = 0,
          center: Sequence[float] = CENTER, radius: float = RADIUS) -> Path:
    """Write :func:`generate` to ``path`` (``.h5`` or ``.csv``, see
    :func:`flowctl.data.gaia.write_gaia`)."""
    return write_gaia(path, generate(n_field, n_stream, seed, center, radius))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flowctl.data.synth.gaia",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/gaia", help="output folder (default data/gaia)")
    ap.add_argument("--name", default="patch", help="file name without suffix (default patch)")
    ap.add_argument("--format", choices=("h5", "csv"), default="h5")
    ap.add_argument("--n-field", type=int, default=400_000, help="smooth field stars")
    ap.add_argument("--n-stream", type=int, default=1000, help="injected stream stars")
    ap.add_argument("--ra", type=float, default=CENTER[0], help="patch centre ra (deg)")
    ap.add_argument("--dec", type=float, default=CENTER[1], help="patch centre dec (deg)")
    ap.add_argument("--radius", type=float, default=RADIUS, help="patch radius (deg)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n_field < 1 or args.n_stream < 0:
        ap.error("--n-field must be >= 1 and --n-stream >= 0")
    if not 0.0 < args.radius <= 30.0:
        ap.error("--radius must be in (0, 30] deg")
    t0 = time.perf_counter()
    path = write(Path(args.out) / f"{args.name}.{args.format}", args.n_field, args.n_stream,
                 args.seed, (args.ra, args.dec), args.radius)
    patch = load_patch(path, (args.ra, args.dec), args.radius)
    fid = fiducial_mask(patch)
    lab = patch.labels
    assert lab is not None
    print(f"{path}: {len(patch)} stars ({int(lab.sum())} stream) in a {args.radius} deg patch "
          f"at (ra, dec) = ({args.ra}, {args.dec}); after fiducial cuts {int(fid.sum())} "
          f"({int(lab[fid].sum())} stream) ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
