"""ANODE or CATHODE on a Gaia sky patch ("Via Machinae", reference/anomaly.md §3–4):
stellar-stream search, with a Hough line search over the top-ranked stars of each window.

The condition ``μ`` is one proper-motion coordinate of the patch frame (``anode.condition``,
default ``pmlam`` = μ_λ); the features are ``x = (φ, λ, μ_other, b−r, g)``. For every signal
region (SR) window ``|μ − c| < sr_width/2`` of a sliding scan, two conditional flows are fitted:

* inner ``p_SR(x|μ)`` on the SR stars,
* outer ``p_SB(x|μ)`` on the flanking sidebands ``sr_width/2 ≤ |μ − c| < sr_width/2 + sb_width``,
  and interpolated into the SR through its condition.

With ``method: cathode`` (Via Machinae 3.0, arXiv:2509.08064) only the outer flow is fitted;
``cathode.oversample`` × N_SR background samples are drawn from it at the SR stars' conditions,
and classifiers SR stars (1) vs samples (0) score every SR star out-of-fold (``cathode.k``
folds, the anomaly app's weak classifier); the score is the classifier's log-odds.

After scoring, ``evaluate`` runs a Hough line search (:mod:`flowctl.anomaly.hough`) over the
``eval.hough.top_n`` best fiducial stars of each window: the most populated band of width
``eval.hough.width`` deg in (φ, λ), with its significance against as many uniform stars in the
patch (look-elsewhere included); the line members of the most significant window are the
stream candidate, reported with their purity and recall.

The ANODE score of an SR star is ``log R = log p_SR(x|μ) − log p_SB(x|μ)``; both log-densities include
the Jacobians of their own preprocessing (``flow.preprocessing``: minmax → logit → standardize,
fitted on each flow's own stars), so they are in the same data units. Stars outside the domain of
either flow's min–max range, within ``eval.edge_deg`` of the patch edge, or in the sparsest
``eval.min_density_quantile`` of ``p_SB`` are not scored (ANODE's box cut, reference §3). A star in several (overlapping) windows gets its
highest score. ``evaluate`` applies the fiducial cuts (``g < 20.2``, ``0.5 ≤ b−r ≤ 1``,
``|μ_φ*| > 2`` or ``|μ_λ| > 2`` mas/yr) after scoring, ranks the stars and, when the table has
a truth column, reports the purity and recall of the stream among the top-k.

Run layout: ``RUN/checkpoints/best.pt`` (the best weights of all windows' flows in one file),
``RUN/windows/wNN/{inner,outer}/`` (each flow's training checkpoints and ``metrics.jsonl``),
``RUN/scores.h5`` (per-star scores), ``RUN/plots/{score_map,top_stars}.png``, ``RUN/metrics.json``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowctl.apps.common import (
    UserError,
    build_flow,
    find_checkpoint,
    is_main_process,
    update_metrics_json,
    write_config,
)
from flowctl.data.gaia import GaiaPatch, fiducial_mask, load_patch
from flowctl.plots.gaia import gaia_plots

__all__ = ["COMMANDS", "Window", "evaluate", "features_for", "load_data", "smooth_scores",
           "train", "windows"]

CONDITIONS = ("pmlam", "pmphi")


@dataclass(frozen=True)
class Window:
    """One SR window: centre ``c`` and half-width ``h`` of the SR, sideband width ``sb``
    (mas/yr). The condition is scaled as ``(μ − c) / (h + sb)`` (∈ [−1, 1] on SR ∪ SB)."""

    index: int
    center: float
    half: float
    sb: float

    @property
    def name(self) -> str:
        return f"w{self.index:02d}"

    def sr(self, mu: np.ndarray) -> np.ndarray:
        """``[N]`` bool: ``|μ − c| < h``."""
        return np.abs(mu - self.center) < self.half

    def sideband(self, mu: np.ndarray) -> np.ndarray:
        """``[N]`` bool: ``h ≤ |μ − c| < h + sb``."""
        d = np.abs(mu - self.center)
        return (d >= self.half) & (d < self.half + self.sb)

    def context(self, mu: np.ndarray) -> np.ndarray:
        """Scaled condition ``[N, 1]`` float32."""
        return ((mu - self.center) / (self.half + self.sb)).astype(np.float32)[:, None]


def features_for(condition: str) -> list[str]:
    """Flow features ``x`` for the condition ``pmlam`` or ``pmphi``."""
    if condition not in CONDITIONS:
        raise UserError(f"anode.condition must be one of {', '.join(CONDITIONS)}, "
                        f"got {condition!r}")
    other = "pmphi" if condition == "pmlam" else "pmlam"
    return ["phi", "lam", other, "bp_rp", "g"]


def windows(anode: dict[str, Any]) -> list[Window]:
    """SR windows of the ``anode`` config: ``centers: [..]`` or ``scan: {start, stop, step}``
    (centres ``start, start+step, ... ≤ stop``), with ``sr_width`` and ``sb_width`` (mas/yr)."""
    sr_w, sb_w = float(anode.get("sr_width", 2.0)), float(anode.get("sb_width", 2.0))
    if sr_w <= 0 or sb_w <= 0:
        raise UserError(f"anode.sr_width and anode.sb_width must be > 0, got {sr_w}, {sb_w}")
    centers = anode.get("centers")
    if centers is None:
        scan = anode.get("scan") or {}
        try:
            start, stop, step = (float(scan[k]) for k in ("start", "stop", "step"))
        except (KeyError, TypeError):
            raise UserError("anode needs centers: [..] or scan: {start, stop, step}") from None
        if step <= 0 or stop < start:
            raise UserError(f"anode.scan needs step > 0 and stop >= start, got {scan}")
        n = math.floor((stop - start) / step + 1e-9) + 1
        centers = [start + i * step for i in range(n)]
    if not centers:
        raise UserError("anode.centers is empty")
    return [Window(i, round(float(c), 6), sr_w / 2, sb_w) for i, c in enumerate(centers)]


METHODS = ("anode", "cathode")


def _method(cfg: dict[str, Any]) -> str:
    m = cfg.get("method", "anode")
    if m not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)} for the gaia app, got {m!r}")
    return str(m)


def _cathode_settings(cfg: dict[str, Any]) -> tuple[int, float, Any]:
    """``(k, oversample, classifier config)`` of ``cathode:`` and ``classifier:``."""
    from flowctl.anomaly.classifier import WeakClassifierConfig

    c = dict(cfg.get("cathode") or {})
    k, over = c.get("k", 5), c.get("oversample", 4.0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 3:
        raise UserError(f"cathode.k must be an integer >= 3, got {k!r}")
    if not isinstance(over, (int, float)) or not over > 0:
        raise UserError(f"cathode.oversample must be > 0, got {over!r}")
    try:
        ccfg = WeakClassifierConfig.from_dict(cfg.get("classifier"))
    except (TypeError, ValueError) as exc:
        raise UserError(f"classifier: {exc}") from None
    return int(k), float(over), ccfg


def _cathode_window(cfg: dict[str, Any], outer_state: dict[str, torch.Tensor], x: np.ndarray,
                    ctx: np.ndarray, seed: int) -> tuple[dict[str, Any], torch.Tensor]:
    """CATHODE in one window: ``oversample · N`` samples of the sideband flow at conditions
    drawn from the SR stars' ``ctx [N, 1]`` (kept inside the SR stars' feature range), then
    k-fold classifiers SR stars vs samples. Returns the summary and the out-of-fold log-odds
    ``[N]`` of the SR stars ``x [N, D]``."""
    from flowctl.anomaly.classifier import kfold_fit_score
    from flowctl.metrics.sic import auc

    k, over, ccfg = _cathode_settings(cfg)
    t0 = time.perf_counter()
    flow = _flow_from(cfg, outer_state, "sideband flow")
    rng = np.random.default_rng(seed)
    n = max(round(over * len(x)), k * 2)
    c = torch.from_numpy(ctx[rng.integers(0, len(ctx), n)])
    torch.manual_seed(seed)
    with torch.no_grad():
        samp = np.concatenate([flow.sample(len(cb), cb).double().numpy()
                               for cb in torch.split(c, 50000)])
    lo, hi = x.min(0), x.max(0)
    samp = samp[np.isfinite(samp).all(1) & (samp >= lo).all(1) & (samp <= hi).all(1)]
    if len(samp) < 2 * k:
        raise UserError(f"cathode: only {len(samp)} sideband-flow samples fall inside the SR "
                        "stars' range; the sideband flow is unusable (train longer?)")
    y = np.r_[np.ones(len(x)), np.zeros(len(samp))]
    try:
        res = kfold_fit_score(np.r_[x, samp], y, dataclasses.replace(ccfg, seed=seed), k)
    except ValueError as exc:
        raise UserError(f"cathode classifier: {exc}") from None
    p = np.clip(res.scores[: len(x)], 1e-12, 1 - 1e-12)
    info = {"n_samples": len(samp), "k": k, "auc_sr_vs_samples": auc(y, res.scores),
            "wall_s": round(time.perf_counter() - t0, 2)}
    return info, torch.as_tensor(np.log(p) - np.log1p(-p), dtype=torch.float64)


def load_data(data_cfg: dict[str, Any]) -> GaiaPatch:
    """The patch of the ``data`` config (``path``, ``key``, ``center: [ra, dec]``, ``radius``,
    ``truth``), with the optional preselections ``g_max`` (mag) and ``color: [lo, hi]``
    (``lo ≤ b−r ≤ hi``) applied before training (the fiducial cuts' g and colour cuts moved
    ahead of the density estimation: fewer, more stream-like stars per window)."""
    path = data_cfg.get("path")
    if not path:
        raise UserError("data.path is required: pass data.path=FILE (a Gaia CSV or HDF5 table; "
                        "`python -m flowctl.data.synth.gaia` writes a synthetic one)")
    center = data_cfg.get("center") or [148.6, 24.2]
    if len(center) != 2:
        raise UserError(f"data.center must be [ra, dec] in deg, got {center}")
    patch = load_patch(path, center, float(data_cfg.get("radius", 15.0)), data_cfg.get("key"),
                       data_cfg.get("truth", "stream"))
    g_max = data_cfg.get("g_max")
    if g_max is not None:
        patch = patch.subset(patch["g"] < float(g_max))
    color = data_cfg.get("color")
    if color is not None:
        try:
            lo, hi = (float(c) for c in color)
        except (TypeError, ValueError):
            raise UserError(f"data.color must be [lo, hi] (b-r, mag) or null, got {color!r}"
                            ) from None
        if not lo < hi:
            raise UserError(f"data.color needs lo < hi, got {color!r}")
        patch = patch.subset((patch["bp_rp"] >= lo) & (patch["bp_rp"] <= hi))
    if len(patch) == 0:
        raise UserError(f"data.g_max={g_max}, data.color={color}: no star of "
                        f"{data_cfg.get('path')} passes the preselection")
    return patch


def _flow_spec(cfg: dict[str, Any], dim: int) -> dict[str, Any]:
    spec = dict(cfg["flow"])
    if spec.get("features") is None:
        spec["features"] = dim
    if int(spec["features"]) != dim or int(spec.get("context", 1)) != 1:
        raise UserError(f"flow.features={spec['features']}, flow.context={spec.get('context')}; "
                        f"the Gaia ANODE flows model {dim} features given 1 condition")
    spec["context"] = 1
    return spec


def _nll(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return -model.log_prob(batch[0], batch[1]).mean()


def _fit(cfg: dict[str, Any], x: np.ndarray, ctx: np.ndarray, out_dir: Path,
         seed: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Fit one conditional flow on ``x [N, D]`` given ``ctx [N, 1]``; 80/20 train/val split
    (``anode.val_fraction``); the preprocessing is fitted on all ``N`` stars. Returns the
    summary and the best epoch's weights."""
    from torch.utils.data import TensorDataset

    from flowctl.training import (
        TrainingError,
        TrainingInterrupted,
        load_checkpoint,
        seed_everything,
    )
    from flowctl.training import train as fit

    seed_everything(seed)
    flow = build_flow(cfg["flow"])
    xt, ct = torch.from_numpy(x), torch.from_numpy(ctx)
    flow.initialize(xt, ct)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, round(float(cfg["anode"].get("val_fraction", 0.2)) * len(x)))
    va, tr = perm[:n_val], perm[n_val:]
    try:
        s = fit(flow, _nll, TensorDataset(xt[tr], ct[tr]), TensorDataset(xt[va], ct[va]),
                cfg["trainer"], out_dir, run_config=cfg)
        state = load_checkpoint(out_dir)["model"]
    except TrainingInterrupted:
        raise  # the CLI exits 130/143; `trainer.resume=true` continues window by window
    except TrainingError as exc:
        raise UserError(f"{out_dir}: {exc}") from None
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return ({"n": len(x), "best_val_nll": s.get("best_val_loss"),
             "best_epoch": s.get("best_epoch"), "epochs": s.get("epochs"),
             "wall_s": s.get("wall_s")}, state)


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fit the inner (SR) and outer (SB) flows of every window into ``RUN/windows/wNN``."""
    t0 = time.perf_counter()
    anode = dict(cfg.get("anode") or {})
    cond = anode.get("condition", "pmlam")
    names = features_for(cond)
    method = _method(cfg)
    if method == "cathode":
        _cathode_settings(cfg)
    cfg["flow"] = _flow_spec(cfg, len(names))
    wins = windows(anode)
    patch = load_data(cfg["data"])
    write_config(run_dir, cfg)
    x_all, mu = patch.array(names), patch[cond]
    min_stars = int(anode.get("min_stars", 200))
    seed = int(cfg.get("seed", 0))
    lab = patch.labels
    per: list[dict[str, Any]] = []
    bundle: dict[str, dict[str, Any]] = {}
    for w in wins:
        sr, sb = w.sr(mu), w.sideband(mu)
        rec: dict[str, Any] = {"window": w.name, "center": w.center, "n_sr": int(sr.sum()),
                               "n_sb": int(sb.sum())}
        if lab is not None:
            rec["n_stream_sr"] = int(lab[sr].sum())
        if min(sr.sum(), sb.sum()) < min_stars:
            rec["skipped"] = f"fewer than anode.min_stars={min_stars} SR or SB stars"
            per.append(rec)
            continue
        wdir = run_dir / "windows" / w.name
        bundle[w.name] = {"center": w.center}
        parts = (("outer", sb),) if method == "cathode" else (("inner", sr), ("outer", sb))
        for part, m in parts:
            rec[part], bundle[w.name][part] = _fit(cfg, x_all[m], w.context(mu[m]), wdir / part,
                                                   seed + 1000 * w.index + (part == "outer"))
        if method == "cathode":
            rec["cathode"], bundle[w.name]["cathode_scores"] = _cathode_window(
                cfg, bundle[w.name]["outer"], x_all[sr], w.context(mu[sr]),
                seed + 1000 * w.index + 2)
        per.append(rec)
        if is_main_process():
            inner = (f"inner {rec['inner']['best_val_nll']:.3f}, " if "inner" in rec else "")
            extra = (f"; classifier AUC SR vs samples {rec['cathode']['auc_sr_vs_samples']:.3f}"
                     if "cathode" in rec else "")
            print(f"window {w.name} {cond} {w.center:+.2f} ± {w.half:g}: {rec['n_sr']} SR / "
                  f"{rec['n_sb']} SB stars; val NLL {inner}"
                  f"outer {rec['outer']['best_val_nll']:.3f}{extra}", flush=True)
    trained = [r for r in per if "outer" in r]
    if not trained:
        raise UserError(f"no window has {min_stars} SR and SB stars; widen anode.sr_width/"
                        "sb_width, move anode.scan or lower anode.min_stars")
    if is_main_process():
        _save_bundle(run_dir, cfg, bundle)
    out = {"command": "train", "method": method, "data": patch.source, "n_patch": len(patch),
           "condition": cond,
           "features": names, "windows": per, "n_windows": len(trained),
           "parameters_per_flow": sum(p.numel() for p in build_flow(cfg["flow"]).parameters()),
           "train_wall_s": round(time.perf_counter() - t0, 2)}
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        what = ("sideband flow + k-fold classifiers" if method == "cathode" else "2 flows")
        print(f"train: {method}: {patch.source}: {len(patch)} stars, {len(trained)} of "
              f"{len(wins)} windows in {cond}, {what} each; {out['train_wall_s']:.1f} s")
        print(f"run directory: {run_dir}")
    return out


def _save_bundle(run_dir: Path, cfg: dict[str, Any], bundle: dict[str, Any]) -> Path:
    """``RUN/checkpoints/best.pt``: the best weights of every window's two flows in one file
    (``{"windows": {wNN: {"center", "inner", "outer"}}}``), so the run directory alone is
    enough to evaluate (the per-window folders only keep their training logs)."""
    from flowctl.training import CHECKPOINT_FORMAT_VERSION, save_checkpoint
    from flowctl.training.checkpoint import copy_atomic

    best = save_checkpoint({"format_version": CHECKPOINT_FORMAT_VERSION, "app": "gaia",
                            "config": dict(cfg), "windows": bundle},
                           run_dir / "checkpoints" / "best.pt")
    copy_atomic(best, run_dir / "checkpoints" / "last.pt")  # the CLI's "already trained" mark
    return best


def _load_bundle(run_dir: Path) -> dict[str, Any]:
    from flowctl.training import TrainingError, load_checkpoint

    path = find_checkpoint(run_dir)
    if path is None:
        raise UserError(f"run directory {run_dir} has no checkpoint (checkpoints/best.pt); "
                        "train it with `flowctl train config=gaia_anode`")
    try:
        ckpt = load_checkpoint(path)
    except TrainingError as exc:
        raise UserError(str(exc)) from None
    if ckpt.get("app") != "gaia" or not isinstance(ckpt.get("windows"), dict):
        raise UserError(f"{path} is not a Gaia ANODE checkpoint (no per-window flows)")
    return ckpt["windows"]


def _flow_from(cfg: dict[str, Any], state: dict[str, torch.Tensor], where: str
               ) -> torch.nn.Module:
    flow = build_flow(cfg["flow"])
    try:
        flow.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{where}: the weights do not match the flow in config.yaml "
                        f"({str(exc).strip().splitlines()[0]})") from None
    return flow.eval()


# --------------------------------------------------------------------------- evaluate


@torch.no_grad()
def _log_prob(flow: torch.nn.Module, x: np.ndarray, ctx: np.ndarray,
              batch: int = 16384) -> np.ndarray:
    out = [flow.log_prob(torch.from_numpy(x[i:i + batch]), torch.from_numpy(ctx[i:i + batch]))
           .double().numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def _in_domain(flow: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """``[N]`` bool: inside the open min–max box of the flow's first preprocessing layer."""
    first = flow.transform[0]
    lo, hi = getattr(first, "lo", None), getattr(first, "hi", None)
    if lo is None or hi is None:
        return np.ones(len(x), bool)
    lo, hi = lo.numpy(), hi.numpy()
    return np.all((x > lo) & (x < hi), axis=1)


def smooth_scores(score: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Each finite score ``[N]`` replaced by the mean over its ``k`` nearest finite-score
    neighbours (itself included) in the standardized features ``x [N, D]``; −inf stays.

    A stream is a cluster in (position, proper motion, colour–magnitude), chance high scores
    are not: averaging over neighbours lifts the first against the second (the clustering of
    high-scoring stars in Via Machinae 2). Costs one k-d tree query per window."""
    from scipy.spatial import cKDTree

    out = np.array(score, np.float64, copy=True)
    ok = np.flatnonzero(np.isfinite(out))
    if len(ok) < 2 or k < 2:
        return out
    z = np.asarray(x, np.float64)[ok]
    z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
    _, nn = cKDTree(z).query(z, k=min(k, len(ok)))
    out[ok] = out[ok][nn].mean(1)
    return out


def _scores(cfg: dict[str, Any], run_dir: Path, bundle: dict[str, Any], patch: GaiaPatch
            ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Best score per star ``[N]`` (ANODE: ``log R``; CATHODE: the classifier's log-odds;
    −inf where unscored) and its window index ``[N]``.

    Scored are SR stars inside both flows' min–max domain, at least ``eval.edge_deg`` inside
    the patch edge, and not in the sparse tails of the background model: ``log p_SB`` at or
    above its ``eval.min_density_quantile`` quantile over the window's SR stars (ANODE's
    "logPbg" box cut; in the tails both densities are extrapolated and their ratio is noise).
    """
    anode = dict(cfg.get("anode") or {})
    ev = dict(cfg.get("eval") or {})
    cond = anode.get("condition", "pmlam")
    method = _method(cfg)
    x_all, mu = patch.array(features_for(cond)), patch[cond]
    edge = float(ev.get("edge_deg", 0.0))
    q = float(ev.get("min_density_quantile", 0.0))
    if not 0.0 <= q < 1.0:
        raise UserError(f"eval.min_density_quantile must be in [0, 1), got {q}")
    smooth_k = ev.get("smooth_k", 0) or 0
    if isinstance(smooth_k, bool) or not isinstance(smooth_k, int) or smooth_k < 0:
        raise UserError(f"eval.smooth_k must be an integer >= 0 (0: off), got {smooth_k!r}")
    dist = np.degrees(np.arccos(np.clip(np.cos(np.radians(patch["lam"]))
                                        * np.cos(np.radians(patch["phi"])), -1.0, 1.0)))
    inside = dist < patch.radius - edge
    best = np.full(len(patch), -np.inf)
    where = np.full(len(patch), -1, np.int64)
    info: list[dict[str, Any]] = []
    for w in windows(anode):
        if w.name not in bundle:
            continue
        sr = np.flatnonzero(w.sr(mu))
        x, ctx = x_all[sr], w.context(mu[sr])
        outer = _flow_from(cfg, bundle[w.name]["outer"], f"{run_dir} window {w.name}")
        if method == "cathode":
            stored = bundle[w.name].get("cathode_scores")
            if stored is None or len(stored) != len(sr):
                raise UserError(f"run directory {run_dir}: window {w.name} has no CATHODE "
                                "scores for this patch's SR stars (data.* changed since "
                                "training?)")
            ok = _in_domain(outer, x) & inside[sr]
        else:
            inner = _flow_from(cfg, bundle[w.name]["inner"], f"{run_dir} window {w.name}")
            ok = _in_domain(inner, x) & _in_domain(outer, x) & inside[sr]
        s = np.full(len(sr), -np.inf)
        if ok.any():
            lp_out = _log_prob(outer, x[ok], ctx[ok])
            if method == "cathode":
                r = np.asarray(stored, np.float64)[ok]
            else:
                r = _log_prob(inner, x[ok], ctx[ok]) - lp_out
            if q > 0:
                r[lp_out < np.quantile(lp_out[np.isfinite(lp_out)], q)] = -np.inf
            s[ok] = r
        s[~np.isfinite(s)] = -np.inf
        if smooth_k > 1:
            s = smooth_scores(s, np.c_[x, mu[sr]], smooth_k)
        upd = s > best[sr]
        best[sr[upd]] = s[upd]
        where[sr[upd]] = w.index
        info.append({"window": w.name, "center": w.center, "index": sr, "score": s,
                     "n_scored": int(np.isfinite(s).sum())})
    if not info:
        raise UserError(f"run directory {run_dir}: its checkpoint holds none of the windows "
                        "of its config")
    return best, where, info


def _topk_stats(score: np.ndarray, lab: np.ndarray, mask: np.ndarray, k: int,
                n_stream: int) -> dict[str, Any]:
    """Purity and recall of label 1 among the top ``k`` finite scores inside ``mask``."""
    idx = np.flatnonzero(mask & np.isfinite(score))
    top = idx[np.argsort(-score[idx], kind="stable")[:k]]
    hits = int(lab[top].sum())
    return {"k": len(top), "stream": hits, "purity": hits / max(len(top), 1),
            "recall": hits / max(n_stream, 1)}


def _write_scores(path: Path, patch: GaiaPatch, score: np.ndarray, where: np.ndarray,
                  fid: np.ndarray) -> None:
    from flowctl.atomic import write_h5

    sets = {k: patch[k] for k in ("ra", "dec", "phi", "lam", "pmphi", "pmlam", "bp_rp", "g")}
    sets.update({"log_r": score, "window": where, "fiducial": fid})
    if patch.labels is not None:
        sets["stream"] = patch.labels
    write_h5(path, sets, {"note": "log_r = -inf: not in any trained SR window or outside a "
                                  "flow's domain"})


def _hough(cfg: dict[str, Any], patch: GaiaPatch, info: list[dict[str, Any]],
           fid: np.ndarray, lab: np.ndarray | None) -> dict[str, Any]:
    """Line search over the ``eval.hough.top_n`` best fiducial stars of each window; the
    most significant window's line members are the stream candidate."""
    from flowctl.anomaly.hough import line_search

    hc = dict((cfg.get("eval") or {}).get("hough") or {})
    if not hc.get("enabled", True):
        return {"enabled": False}
    top_n, width = int(hc.get("top_n", 100)), float(hc.get("width", 0.5))
    n_null = int(hc.get("n_null", 200))
    if top_n < 3 or not width > 0 or n_null < 10:
        raise UserError(f"eval.hough needs top_n >= 3, width > 0 and n_null >= 10, got {hc}")
    n_stream = int(lab[fid].sum()) if lab is not None else 0
    per, best, best_members = [], None, None
    for w in info:
        idx, sc = np.asarray(w["index"]), np.asarray(w["score"])
        ok = np.isfinite(sc) & fid[idx]
        sel = idx[ok][np.argsort(-sc[ok], kind="stable")[:top_n]]
        if len(sel) < 3:
            continue
        fit = line_search(patch["phi"][sel], patch["lam"][sel], patch.radius, width,
                          n_null=n_null, seed=int(cfg.get("seed", 0)) + len(per))
        rec = {"window": w["window"], "center": w["center"], "n_top": len(sel),
               "count": fit.count, "theta_deg": round(float(np.degrees(fit.theta)), 2),
               "rho_deg": round(fit.rho, 3), "null_mean": fit.null_mean,
               "null_std": fit.null_std, "z": fit.z, "p": fit.p}
        members = sel[fit.members]
        if lab is not None:
            rec["purity_top"] = float(lab[sel].mean())
            rec["purity"] = float(lab[members].mean()) if len(members) else 0.0
            rec["recall"] = int(lab[members].sum()) / max(n_stream, 1)
        per.append(rec)
        if best is None or (rec["z"], rec["count"]) > (best["z"], best["count"]):
            best, best_members = rec, members
    out: dict[str, Any] = {"top_n": top_n, "width": width, "n_null": n_null,
                           "per_window": per, "best": best}
    if best_members is not None:
        out["best_members"] = len(best_members)
    return out


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Score the SR stars of every window, apply the fiducial cuts, rank, and report purity and
    recall of the truth column among the top-k; plots and ``scores.h5``."""
    t0 = time.perf_counter()
    ev = dict(cfg.get("eval") or {})
    anode = dict(cfg.get("anode") or {})
    cond = anode.get("condition", "pmlam")
    bundle = _load_bundle(run_dir)
    patch = load_data(cfg["data"])
    score, where, info = _scores(cfg, run_dir, bundle, patch)
    fc = dict(ev.get("fiducial") or {})
    fid = fiducial_mask(patch, float(fc.get("g_max", 20.2)),
                        tuple(fc.get("color", (0.5, 1.0))), float(fc.get("pm_min", 2.0)))
    if not ev.get("fiducial_cuts", True):
        fid = np.ones(len(patch), bool)
    ks = sorted({int(k) for k in ev.get("top_k", [50, 100])})
    scored = fid & np.isfinite(score)
    out: dict[str, Any] = {"command": "evaluate", "data": patch.source, "n_patch": len(patch),
                           "n_fiducial": int(fid.sum()), "n_scored": int(scored.sum()),
                           "condition": cond, "windows": len(info),
                           "edge_deg": float(ev.get("edge_deg", 0.0)),
                           "min_density_quantile": float(ev.get("min_density_quantile", 0.0)),
                           "smooth_k": int(ev.get("smooth_k", 0) or 0)}
    lab = patch.labels
    main = is_main_process()
    if lab is not None:
        n_stream = int(lab[fid].sum())
        out["n_stream_fiducial"] = n_stream
        out["n_stream_scored"] = int(lab[scored].sum())
        out["random_purity"] = float(lab[scored].mean()) if scored.any() else 0.0
        for k in ks:
            s = _topk_stats(score, lab, fid, k, n_stream)
            out[f"purity_top{k}"] = s["purity"]
            out[f"recall_top{k}"] = s["recall"]
            out[f"stream_top{k}"] = s["stream"]
        per = []
        for w in info:
            m = np.zeros(len(patch), bool)
            m[w["index"]] = True
            sw = np.full(len(patch), -np.inf)
            sw[w["index"]] = w["score"]
            rec = {"window": w["window"], "center": w["center"], "n_scored": w["n_scored"],
                   "n_stream_sr_fiducial": int(lab[m & fid].sum())}
            for k in ks:
                rec[f"purity_top{k}"] = _topk_stats(sw, lab, m & fid, k, n_stream)["purity"]
            per.append(rec)
        out["per_window"] = per
    out["hough"] = _hough(cfg, patch, info, fid, lab)
    kmax = max(ks) if ks else 100
    idx = np.flatnonzero(scored)
    top = idx[np.argsort(-score[idx], kind="stable")[:kmax]]
    out["top_log_r"] = [float(score[top[0]]), float(score[top[-1]])] if len(top) else []
    if main:
        _write_scores(run_dir / "scores.h5", patch, score, where, fid)
        out["scores_file"] = str(run_dir / "scores.h5")
        if ev.get("plots", True):
            out["plots"] = gaia_plots(run_dir / "plots", patch, score, fid, top, cond)
    out["eval_wall_s"] = round(time.perf_counter() - t0, 2)
    update_metrics_json(run_dir, {"evaluate": out})
    if main:
        line = (f"evaluate: {patch.source}: {out['n_scored']} SR stars scored after fiducial "
                f"cuts in {len(info)} window(s)")
        if lab is not None:
            line += "; " + ", ".join(
                f"top-{k} purity {out[f'purity_top{k}']:.1%} recall {out[f'recall_top{k}']:.1%}"
                for k in ks) + f" (random {out['random_purity']:.2%})"
        print(line)
        h = out["hough"].get("best")
        if h:
            hl = (f"line search: window {h['window']} ({h['center']:+.2f}): {h['count']} of the "
                  f"top {h['n_top']} stars on one {out['hough']['width']:g} deg track, "
                  f"z = {h['z']:.1f} (p = {h['p']:.3g}) vs uniform stars")
            if "purity" in h:
                hl += f"; its members: purity {h['purity']:.1%}, recall {h['recall']:.1%}"
            print(hl)
        print(f"plots: {run_dir / 'plots'}; scores: {run_dir / 'scores.h5'}")
    return out


COMMANDS = {"train": train, "evaluate": evaluate}
