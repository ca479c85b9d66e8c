"""Why a weak stream is missed: diagnostics of a finished Gaia run and of its patch.

Three measurements (results appended to ``benchmarks/results/gaia_diagnostics_<tag>.json``):

``runs RUN ...``
    For each trained run (``flowctl train config=gaia_anode|gaia_cathode``): every window's
    scores recomputed from the checkpoint with the run's cuts, then the AUC of stream vs field
    among the scored fiducial stars, the stream stars' rank percentiles, where the top-100 lie
    (distance from the patch centre), the top-k purity with the score averaged over the ``k``
    nearest scored stars of the same window (standardized (φ, λ, μ_φ*, μ_λ, b−r, g); the
    "cluster the high-scoring stars" step of Via Machinae 2, an evaluation-only change), and
    the line search's best line per window with its null drawn from the window's own scored
    stars instead of uniform stars.
``oracle PATCH``
    The purity reachable with the truth model: stars of the stream's SR window within a band
    of the true track, proper motion and isochrone (an upper bound no method can beat).
``iad PATCH``
    Idealized CATHODE in the stream's window: SR stars vs a *perfect* background template
    (fresh field stars of the generator in the same SR), with the Gaia CATHODE classifier
    (k-fold, out-of-fold scores): separates the classifier's limit from the template's.

    python benchmarks/gaia_diagnostics.py --tag p400k_seed1 runs outputs/gaia-streams/p400k_seed1/anode_s300
    python benchmarks/gaia_diagnostics.py --tag p400k_seed1 oracle outputs/gaia-streams/p400k_seed1/data/patch_s300.h5
    python benchmarks/gaia_diagnostics.py --tag p400k_seed1 iad outputs/gaia-streams/p400k_seed1/data/patch_s300.h5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowctl.atomic import write_text

REPO = Path(__file__).resolve().parents[1]
COLS = ("phi", "lam", "pmphi", "pmlam", "bp_rp", "g")
FID = {"g_max": 20.2, "color": (0.5, 1.0), "pm_min": 2.0}


def _patch(path: str) -> Any:
    from flowctl.apps.gaia import load_data

    return load_data({"path": path, "center": [148.6, 24.2], "radius": 15.0,
                      "truth": "stream"})


def _top(score: np.ndarray, lab: np.ndarray, mask: np.ndarray, k: int) -> float:
    idx = np.flatnonzero(mask & np.isfinite(score))
    top = idx[np.argsort(-score[idx], kind="stable")[:k]]
    return float(lab[top].mean()) if len(top) else 0.0


def run_diagnostics(run: Path, knn: tuple[int, ...] = (5, 10, 20)) -> dict[str, Any]:
    """Diagnostics of one trained run directory (see the module docstring)."""
    from scipy.spatial import cKDTree

    from flowctl.anomaly.hough import hough_counts, line_search
    from flowctl.apps import gaia as G
    from flowctl.apps.common import read_config
    from flowctl.data.gaia import fiducial_mask
    from flowctl.metrics.sic import auc

    cfg = read_config(run)
    bundle = G._load_bundle(run)
    patch = G.load_data(cfg["data"])
    _, _, info = G._scores(cfg, run, bundle, patch)
    lab = patch.labels.astype(bool)
    fc = dict((cfg.get("eval") or {}).get("fiducial") or {})
    fid = fiducial_mask(patch, float(fc.get("g_max", 20.2)),
                        tuple(fc.get("color", (0.5, 1.0))), float(fc.get("pm_min", 2.0)))
    dist = np.degrees(np.arccos(np.clip(np.cos(np.radians(patch["lam"]))
                                        * np.cos(np.radians(patch["phi"])), -1, 1)))
    n = len(patch)
    best = np.full(n, -np.inf)
    smooth = {k: np.full(n, -np.inf) for k in knn}
    lines = []
    rng = np.random.default_rng(0)
    for w in info:
        idx, s = np.asarray(w["index"]), np.asarray(w["score"])
        ok = np.isfinite(s)
        best[idx[ok]] = np.maximum(best[idx[ok]], s[ok])
        j = idx[ok]
        x = np.stack([patch[c][j] for c in COLS], 1)
        x = (x - x.mean(0)) / x.std(0)
        tree = cKDTree(x)
        for k in knn:
            _, nn = tree.query(x, k=k)
            smooth[k][j] = np.maximum(smooth[k][j], s[ok][nn].mean(1))
        pool = idx[ok & fid[idx]]
        sel = pool[np.argsort(-s[ok & fid[idx]], kind="stable")[:100]]
        if len(sel) >= 3:
            fit = line_search(patch["phi"][sel], patch["lam"][sel], patch.radius, 0.5, n_null=100)
            null = np.array([hough_counts(patch["phi"][r], patch["lam"][r], patch.radius,
                                          0.5)[0].max()
                             for r in (rng.choice(pool, len(sel), replace=False)
                                       for _ in range(100))], np.float64)
            lines.append({"window": w["window"], "count": fit.count,
                          "rho_deg": round(fit.rho, 2),
                          "theta_deg": round(float(np.degrees(fit.theta)), 1),
                          "z_uniform": round(fit.z, 2),
                          "z_scored_stars": round(float((fit.count - null.mean()) / null.std()), 2),
                          "p_scored_stars": float((1 + (null >= fit.count).sum()) / 101),
                          "members_purity": float(lab[sel][fit.members].mean())
                          if fit.members.any() else 0.0})
    ok = fid & np.isfinite(best)
    ranks = np.argsort(np.argsort(-best[ok], kind="stable"))
    idx = np.flatnonzero(ok)
    top = idx[np.argsort(-best[idx], kind="stable")[:100]]
    out = {"run": str(run), "method": cfg.get("method", "anode"),
           "data": str(cfg["data"].get("path")),
           "preselection": {"g_max": cfg["data"].get("g_max"), "color": cfg["data"].get("color")},
           "n_scored_fiducial": int(ok.sum()), "n_stream_scored": int(lab[ok].sum()),
           "auc_stream_vs_field": float(auc(lab[ok].astype(float), best[ok])),
           "stream_rank_p10_p25_p50": [float(v) for v in
                                       np.percentile(ranks[lab[ok]], [10, 25, 50])],
           "top100_dist_deg_p25_p50": [float(v) for v in np.percentile(dist[top], [25, 50])],
           "scored_dist_deg_p25_p50": [float(v) for v in np.percentile(dist[ok], [25, 50])],
           "purity_top50": _top(best, lab, fid, 50), "purity_top100": _top(best, lab, fid, 100),
           "knn": {str(k): {"purity_top50": _top(smooth[k], lab, fid, 50),
                            "purity_top100": _top(smooth[k], lab, fid, 100)} for k in knn},
           "lines": lines}
    train = json.loads((run / "metrics.json").read_text()).get("train", {})
    out["auc_sr_vs_samples"] = {w["window"]: w["cathode"]["auc_sr_vs_samples"]
                                for w in train.get("windows", []) if "cathode" in w}
    return out


def oracle(path: str, center: float = -12.5) -> dict[str, Any]:
    """Purity of truth-model boxes in the stream's window (an upper bound)."""
    from flowctl.apps.gaia import windows
    from flowctl.data.gaia import fiducial_mask
    from flowctl.data.synth.gaia import STREAM_PM, STREAM_PM_GRAD, stream_color, stream_track

    p = _patch(path)
    lab = p.labels.astype(bool)
    w = windows({"centers": [center]})[0]
    sr = w.sr(p["pmlam"]) & fiducial_mask(p, FID["g_max"], FID["color"], FID["pm_min"])
    phi = p["phi"]
    pm_ok = np.abs(p["pmphi"] - (STREAM_PM[0] + STREAM_PM_GRAD[0] * phi)) < 1.5
    rows = []
    for band in (0.5, 0.3):
        near = np.abs(p["lam"] - stream_track(phi)) < band
        for dc in (None, 0.1, 0.05):
            m = sr & near & pm_ok
            if dc is not None:
                m &= np.abs(p["bp_rp"] - stream_color(p["g"])) < dc
            rows.append({"track_band_deg": band, "pmphi_band": 1.5, "color_band": dc,
                         "n": int(m.sum()), "stream": int((m & lab).sum()),
                         "purity": float(lab[m].mean()) if m.any() else 0.0})
    return {"patch": path, "window": center, "n_sr_fiducial": int(sr.sum()),
            "n_stream_sr_fiducial": int((sr & lab).sum()), "boxes": rows}


def iad(path: str, center: float = -12.5, layers: tuple[int, ...] = (64, 64, 64),
        epochs: int = 30, oversample: float = 4.0, seed: int = 0) -> dict[str, Any]:
    """Idealized CATHODE in one window (perfect template from the generator)."""
    from flowctl.anomaly.classifier import WeakClassifierConfig, kfold_fit_score
    from flowctl.apps.gaia import features_for, windows
    from flowctl.data.gaia import fiducial_mask
    from flowctl.data.synth.gaia import field_stars
    from flowctl.metrics.sic import auc

    t0 = time.perf_counter()
    p = _patch(path)
    names = features_for("pmlam")
    w = windows({"centers": [center]})[0]
    sr = w.sr(p["pmlam"])
    x, lab = p.array(names)[sr], p.labels[sr].astype(bool)
    dist = np.degrees(np.arccos(np.cos(np.radians(p["lam"][sr]))
                                * np.cos(np.radians(p["phi"][sr]))))
    ok = fiducial_mask(p, FID["g_max"], FID["color"], FID["pm_min"])[sr] & (dist < 14.5)
    rng = np.random.default_rng(12345 + seed)
    need, got, bg = int(oversample * len(x)), 0, []
    while got < need:
        f = field_stars(rng, 400_000)
        m = w.sr(f["pmlam"])
        bg.append(np.stack([f[k][m] for k in names], 1))
        got += int(m.sum())
    xb = np.concatenate(bg)[:need]
    y = np.r_[np.ones(len(x)), np.zeros(len(xb))]
    cfg = WeakClassifierConfig.from_dict({
        "layers": list(layers), "lr": 1e-3, "batch_size": 256, "epochs": epochs, "top_k": 5,
        "n_runs": 1, "class_weights": True, "seed": seed, "device": "cpu"})
    res = kfold_fit_score(np.r_[x, xb].astype(np.float64), y, cfg, 5)
    s = res.scores[: len(x)]
    idx = np.flatnonzero(ok)
    top = idx[np.argsort(-s[idx], kind="stable")]
    return {"patch": path, "window": center, "layers": list(layers), "epochs": epochs,
            "seed": seed, "n_sr": int(sr.sum()), "n_stream_sr": int(lab.sum()),
            "n_scored_fiducial": int(ok.sum()), "n_stream_scored": int(lab[ok].sum()),
            "auc_sr_vs_template": float(auc(y, res.scores)),
            "auc_stream_vs_field": float(auc(lab[ok].astype(float), s[ok])),
            "purity_top50": float(lab[top[:50]].mean()),
            "purity_top100": float(lab[top[:100]].mean()),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("what", choices=("runs", "oracle", "iad"))
    ap.add_argument("paths", nargs="+", help="run directories (runs) or patch files")
    ap.add_argument("--layers", type=int, nargs="+", default=[64, 64, 64])
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args(argv)
    out = Path(a.results) / f"gaia_diagnostics_{a.tag}.json"
    doc = json.loads(out.read_text()) if out.exists() else {"tag": a.tag, "entries": []}
    command = "python benchmarks/gaia_diagnostics.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    for path in a.paths:
        if a.what == "runs":
            res = run_diagnostics(Path(path))
        elif a.what == "oracle":
            res = oracle(path)
        else:
            res = iad(path, layers=tuple(a.layers), epochs=a.epochs)
        res = {"kind": a.what, "command": command, **res}
        print(json.dumps({k: v for k, v in res.items() if k != "lines"}), flush=True)
        doc["entries"].append(res)
        write_text(out, json.dumps(doc, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
