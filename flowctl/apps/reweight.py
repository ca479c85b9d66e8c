"""Classifier reweighting (DCTR) of a generated sample towards a truth sample, any two tables.

A classifier trained on generated (label 0) vs truth (label 1) events approximates the
likelihood ratio (Neyman–Pearson): with D its calibrated output, ``w(x) = D/(1-D)`` weighs the
generated events to the truth (DCTR, arXiv:1907.08209, 2009.03796). The AUC measures how far
the generator is from the truth; after reweighting a fresh classifier should find AUC ≈ 0.5.

Config keys: ``truth``/``generated`` (files the table loader reads: HDF5, .npy, .csv),
``truth_key``/``generated_key`` (HDF5 datasets), ``columns`` (the same for both), ``classifier``
(:class:`flowctl.classifiers.ClassifierConfig`), ``weights`` (``clip``: the largest
weight in units of the mean, ``normalize``) and ``eval`` (``bins``, ``fresh``, ``plots``).

Commands: ``train`` (and ``classify`` on an existing run) fit the classifier, save it to
``checkpoints/best.pt`` and write ``weights.h5`` (``weights [N_gen]``, ``split`` of each row:
0 train, 1 val, 2 test); ``evaluate`` histograms every column for truth, generated and
reweighted generated events with χ²/ndf and separation power before and after, and trains
fresh classifiers without and with the weights on held-out rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from flowctl.apps.common import UserError, is_main_process, update_metrics_json, write_config

__all__ = ["COMMANDS", "evaluate", "hist_compare", "train"]


def _classifier_cfg(cfg: dict[str, Any]):
    from flowctl.classifiers import ClassifierConfig

    try:
        return ClassifierConfig.from_dict(cfg.get("classifier"))
    except (ValueError, TypeError) as exc:
        raise UserError(f"classifier config: {exc}") from None


def _load(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(truth [N1, F], generated [N0, F])`` as float64."""
    from flowctl.data.table import DataError, load_table

    out = []
    for which in ("truth", "generated"):
        path = cfg.get(which)
        if not path:
            raise UserError(f"{which}=FILE is required")
        try:
            x = load_table(path, key=cfg.get(f"{which}_key"), columns=cfg.get("columns"))
        except DataError as exc:
            raise UserError(str(exc)) from None
        out.append(np.asarray(x, np.float64).reshape(len(x), -1))
    if out[0].shape[1] != out[1].shape[1]:
        raise UserError(f"truth has {out[0].shape[1]} columns, generated {out[1].shape[1]}; "
                        "choose the same ones with columns=[...]")
    return out[0], out[1]


def _weights(cfg: dict[str, Any], probs: np.ndarray) -> tuple[np.ndarray, float]:
    from flowctl.classifiers import dctr_weights

    w = dict(cfg.get("weights") or {})
    clip = w.get("clip", 10.0)
    return dctr_weights(probs, None if clip is None else float(clip),
                        bool(w.get("normalize", True)))


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Classifier generated (0) vs truth (1); AUC ± bootstrap, JSD; weights of the generated."""

    from flowctl.classifiers import classifier_state, config_dict, train_classifier

    truth, gen = _load(cfg)
    ccfg = _classifier_cfg(cfg)
    write_config(run_dir, cfg)
    try:
        res = train_classifier(gen, truth, ccfg)
    except ValueError as exc:
        raise UserError(f"classifier: {exc}") from None
    probs = res.predict(gen)
    w, frac = _weights(cfg, probs)
    assert res.splits is not None
    split_g = np.zeros(len(gen), np.int8)
    split_t = np.zeros(len(truth), np.int8)
    for k, (a, b) in enumerate(zip(*res.splits)):
        split_g[a], split_t[b] = k, k
    out: dict[str, Any] = {
        "command": "train", "truth": str(cfg["truth"]), "generated": str(cfg["generated"]),
        "n_truth": len(truth), "n_generated": len(gen), "features": gen.shape[1],
        **res.summary(), "weights_clipped_fraction": frac,
        "weights_max": float(w.max()), "weights_ess_fraction": float(w.sum()**2
                                                                      / (w**2).sum() / len(w)),
        "classifier": config_dict(ccfg)}
    if is_main_process():
        from flowctl.atomic import write_h5
        from flowctl.training import save_checkpoint

        save_checkpoint({**classifier_state(res, ccfg), "format": "flowctl-classifier-1"},
                        run_dir / "checkpoints" / "best.pt")
        write_h5(run_dir / "weights.h5",
                 {"weights": w, "probability": probs, "split": split_g, "truth_split": split_t},
                 {"truth": str(cfg["truth"]), "generated": str(cfg["generated"]),
                  "clipped_fraction": frac})
        out["weights_file"] = str(run_dir / "weights.h5")
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        print(f"classify: {len(gen)} generated vs {len(truth)} truth events, {gen.shape[1]} "
              f"features: AUC {res.auc:.4f} ± {res.auc_err:.4f}, JSD {res.jsd:.4f}, best epoch "
              f"{res.best_epoch} of {res.epochs}")
        print(f"weights w = D/(1-D) of the generated events -> {out.get('weights_file')} "
              f"({100 * frac:.2f} % clipped at {(cfg.get('weights') or {}).get('clip', 10.0)}, "
              f"ESS {100 * out['weights_ess_fraction']:.1f} %)")
        print(f"run directory: {run_dir}")
    return out


def hist_compare(a: np.ndarray, b: np.ndarray, edges: np.ndarray, wa: np.ndarray | None = None,
                 wb: np.ndarray | None = None) -> dict[str, float]:
    """χ²/ndf and separation power of two (weighted) 1-D samples histogrammed on ``edges``.

    Each histogram is normalised to unit sum; bin errors are ``sqrt(Σw²)/Σw``; empty bins in
    both samples are skipped."""
    wa = np.ones(len(a)) if wa is None else wa
    wb = np.ones(len(b)) if wb is None else wb
    ha, _ = np.histogram(a, edges, weights=wa)
    hb, _ = np.histogram(b, edges, weights=wb)
    va, _ = np.histogram(a, edges, weights=wa**2)
    vb, _ = np.histogram(b, edges, weights=wb**2)
    sa, sb = wa.sum(), wb.sum()
    pa, pb = ha / sa, hb / sb
    var = va / sa**2 + vb / sb**2
    ok = var > 0
    ndf = max(int(ok.sum()) - 1, 1)
    chi2 = float(((pa - pb)[ok] ** 2 / var[ok]).sum())
    s = pa + pb
    sep = float(0.5 * ((pa - pb)[s > 0] ** 2 / s[s > 0]).sum())
    return {"chi2": chi2, "ndf": ndf, "chi2_ndf": chi2 / ndf, "separation": sep}


def _load_predictor(run_dir: Path):
    from flowctl.apps.common import find_checkpoint
    from flowctl.classifiers import ClassifierPredictor

    path = find_checkpoint(run_dir)
    if path is None:
        raise UserError(f"run directory {run_dir} has no checkpoints/best.pt")
    from flowctl.training import TrainingError, safe_load

    try:
        state = safe_load(path)
    except TrainingError as exc:
        raise UserError(str(exc)) from None
    if not isinstance(state, dict) or state.get("format") != "flowctl-classifier-1":
        raise UserError(f"{path} is not a classifier checkpoint of `flowctl train "
                        "config=classifier`")
    return ClassifierPredictor.from_state(state)


def _marginal_plot(path: Path, truth: np.ndarray, gen: np.ndarray, w: np.ndarray,
                   edges: list[np.ndarray], stats: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from flowctl.plots.density import save

    f = truth.shape[1]
    cols = min(f, 4)
    rows = math.ceil(f / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for j in range(rows * cols):
        ax = axes[j // cols][j % cols]
        if j >= f:
            ax.axis("off")
            continue
        e = edges[j]
        kw = {"bins": e, "density": True, "histtype": "step"}
        ax.hist(truth[:, j], color="k", label="truth", **kw)
        ax.hist(gen[:, j], color="tab:red", label="generated", **kw)
        ax.hist(gen[:, j], weights=w, color="tab:blue", ls="--", label="reweighted", **kw)
        st = stats[j]
        ax.set_title(f"x{j}: χ²/ndf {st['before']['chi2_ndf']:.2f} → "
                     f"{st['after']['chi2_ndf']:.2f}", fontsize=8)
        if j == 0:
            ax.legend(fontsize=7)
    return str(save(fig, path))


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Marginals truth vs generated vs reweighted (χ²/ndf, separation power before/after) and
    the AUC of fresh classifiers without and with the weights, on rows the weights' classifier
    did not train on (the test split, or all rows of other files)."""
    import h5py

    from flowctl.classifiers import train_classifier

    ev = dict(cfg.get("eval") or {})
    truth, gen = _load(cfg)
    pred = _load_predictor(run_dir)
    rows = "all rows (files other than the training ones)"
    wfile = run_dir / "weights.h5"
    if wfile.exists():
        with h5py.File(wfile) as f:
            same = (f.attrs.get("truth") == str(cfg["truth"])
                    and f.attrs.get("generated") == str(cfg["generated"]))
            if same and len(f["split"]) == len(gen) and len(f["truth_split"]) == len(truth):
                gen, truth = gen[f["split"][()] == 2], truth[f["truth_split"][()] == 2]
                rows = "the classifier's test split"
    w, frac = _weights(cfg, pred.predict(gen))
    nb = int(ev.get("bins", 40))
    edges, stats = [], []
    for j in range(truth.shape[1]):
        lo, hi = np.quantile(np.concatenate([truth[:, j], gen[:, j]]), [0.005, 0.995])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        e = np.linspace(lo, hi, nb + 1)
        edges.append(e)
        stats.append({"before": hist_compare(truth[:, j], gen[:, j], e),
                      "after": hist_compare(truth[:, j], gen[:, j], e, wb=w)})
    mean = {k: float(np.mean([s[k]["chi2_ndf"] for s in stats])) for k in ("before", "after")}
    out: dict[str, Any] = {"command": "evaluate", "rows": rows, "n_truth": len(truth),
                           "n_generated": len(gen), "weights_clipped_fraction": frac,
                           "marginals": stats, "chi2_ndf_mean": mean}
    if ev.get("fresh", True):
        ccfg = _classifier_cfg(cfg)
        try:
            before = train_classifier(gen, truth, ccfg)
            after = train_classifier(gen, truth, ccfg, w0=w)
        except ValueError as exc:
            raise UserError(f"fresh classifier: {exc}") from None
        out["auc_before"], out["auc_before_err"] = before.auc, before.auc_err
        out["auc_after"], out["auc_after_err"] = after.auc, after.auc_err
    if is_main_process() and ev.get("plots", True):
        out["plot"] = _marginal_plot(run_dir / "plots" / "marginals.png", truth, gen, w,
                                     edges, stats)
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        print(f"evaluate: {len(gen)} generated vs {len(truth)} truth events ({rows})")
        print(f"  marginals χ²/ndf (mean over {truth.shape[1]} columns): before "
              f"{mean['before']:.2f}, after reweighting {mean['after']:.2f}")
        if "auc_before" in out:
            print(f"  fresh classifier AUC: before {out['auc_before']:.4f} ± "
                  f"{out['auc_before_err']:.4f}, after reweighting {out['auc_after']:.4f} ± "
                  f"{out['auc_after_err']:.4f}")
    return out


COMMANDS = {"train": train, "classify": train, "evaluate": evaluate}
