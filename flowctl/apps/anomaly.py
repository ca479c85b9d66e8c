"""Resonant anomaly detection on LHC-Olympics dijets: CATHODE, ANODE, CWoLa hunting, and the
idealized-AD and fully supervised reference classifiers (reference/anomaly.md).

One config per method (``method:``); every method ends by writing ``scores.npz`` (anomaly
scores) into its run directory, and ``evaluate`` gathers the scores of every run on the same
data, so one ROC/SIC figure compares all methods that ran.

Two ways to score (``eval.mode``):

* ``test``: a labelled SR test set cut from the simulated extra files (``data.extra_bkg``,
  ``data.extra_sig``), independent of all training (CATHODE's paper setup);
* ``kfold`` (data alone, the default when both extra files are null): every SR event of
  ``data.path`` is scored out-of-fold (``eval.k`` folds, 5 by default): per fold the method
  trains on k-2 folds of the SR data, validates on one and scores the held-out fold, so no event
  is scored by a model that saw it. The file's own labels then give the ROC/SIC, and
  ``evaluate`` adds the significance gain after cuts at fixed background efficiency and the
  sideband mjj shape before/after the cut (sculpting). Only cathode, anode and cwola run this
  way; the idealized and supervised references need the labelled files.

=========== ======================================== =========================================
method      ``flowctl train``                        then
=========== ======================================== =========================================
cathode     conditional MAF p(x|m) on the sidebands  ``sample`` (SR samples, m from a KDE),
                                                     ``classify`` (SR data vs samples)
anode       p(x|m) on the sidebands and on the SR;    (scores written by ``train``)
            score R = p_SR / p_SB
cwola       classifier SR vs adjacent sideband strips (scores written by ``train``)
idealized   classifier SR data vs perfect background  (scores written by ``train``)
supervised  classifier signal vs background (labels) (scores written by ``train``)
=========== ======================================== =========================================
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowctl.anomaly.splits import AnomalySplits, data_signature, load_splits
from flowctl.apps.common import (
    UserError,
    build_flow,
    is_main_process,
    read_config,
    update_metrics_json,
    write_config,
)
from flowctl.atomic import write_h5, write_npz
from flowctl.data.table import DataError
from flowctl.rundir import is_writable

__all__ = ["COMMANDS", "METHODS", "classify", "evaluate", "sample", "train"]

METHODS = ("cathode", "anode", "cwola", "idealized", "supervised")
DENSITY_METHODS = ("cathode", "anode")
KFOLD_METHODS = ("cathode", "anode", "cwola")
MODES = ("auto", "test", "kfold")
FEATURE_NAMES = ("mjj", "mj1", "dmj", "tau21j1", "tau21j2")
#: Background efficiencies of the cuts whose significance gain ``evaluate`` reports.
CUT_FPRS = (0.01, 0.001)
MIN_FLOW_EVENTS = 20       # a flow's training set (batch norm needs > 1 event per batch)
MIN_FOLD_EVENTS = 10       # SR data events per fold in data-only mode
SCORES = "scores.npz"
SAMPLES = "samples.h5"
CLASSIFIER = "checkpoints/classifier.pt"


# --------------------------------------------------------------------------- helpers


def _method(cfg: dict[str, Any]) -> str:
    m = cfg.get("method")
    if m not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got {m!r}")
    return str(m)


def _splits(cfg: dict[str, Any], need_test: bool = False) -> AnomalySplits:
    try:
        return load_splits(cfg["data"], need_test=need_test)
    except DataError as exc:
        raise UserError(str(exc)) from None


def _mode(cfg: dict[str, Any]) -> str:
    """``test`` or ``kfold`` (``eval.mode``; ``auto``: kfold when both extra files are null)."""
    ev = dict(cfg.get("eval") or {})
    mode = ev.get("mode", "auto")
    if mode not in MODES:
        raise UserError(f"eval.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        d = dict(cfg.get("data") or {})
        mode = "test" if d.get("extra_bkg") or d.get("extra_sig") else "kfold"
    return str(mode)


def _kfold_k(cfg: dict[str, Any]) -> int:
    k = (cfg.get("eval") or {}).get("k", 5)
    if isinstance(k, bool) or not isinstance(k, int) or k < 3:
        raise UserError(f"eval.k must be an integer >= 3 (train, validation and test folds), "
                        f"got {k!r}")
    return int(k)


def _check_mode(cfg: dict[str, Any], method: str) -> str:
    mode = _mode(cfg)
    if mode == "kfold" and method not in KFOLD_METHODS:
        raise UserError(f"method {method} needs labelled simulation and cannot score the data "
                        "alone: set data.extra_bkg=FILE and data.extra_sig=FILE (data-only "
                        f"mode, eval.mode=kfold, runs {', '.join(KFOLD_METHODS)})")
    if mode == "kfold":
        _kfold_k(cfg)
    return mode


def _check_rows(rows: np.ndarray, what: str, minimum: int = 2,
                columns: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
    """One-line UserError before any training when ``rows [N, 6]`` are too few or a feature
    is constant / degenerate (fewer than 3 distinct values) in them."""
    if len(rows) < minimum:
        raise UserError(f"{what}: {len(rows)} events, need at least {minimum} (more data, "
                        "or a wider data.sr / smaller data.*_fraction)")
    for j in columns:
        col = rows[:, j]
        n_distinct = len(np.unique(col))
        if n_distinct < 3:
            vals = ", ".join(f"{v:.6g}" for v in np.unique(col)[:2])
            raise UserError(f"{what}: feature {FEATURE_NAMES[j]} is "
                            f"{'constant' if n_distinct == 1 else 'degenerate'} ({vals}) in "
                            f"all {len(rows)} events; a flow or classifier cannot use it "
                            "(check data.path and data.shift)")


def _inputs(cfg: dict[str, Any], rows: np.ndarray) -> np.ndarray:
    """Classifier inputs ``[N, 4]`` (or ``[N, 5]`` with mjj) from feature rows ``[N, 6]``."""
    mode = cfg.get("classifier_inputs", "features")
    if mode == "features":
        return rows[:, 1:5]
    if mode == "features+mjj":
        return rows[:, 0:5]
    raise UserError(f"classifier_inputs must be features or features+mjj, got {mode!r}")


def _classifier_cfg(cfg: dict[str, Any]):
    from flowctl.anomaly.classifier import WeakClassifierConfig

    try:
        return WeakClassifierConfig.from_dict(cfg.get("classifier"))
    except (TypeError, ValueError) as exc:
        raise UserError(f"classifier: {exc}") from None


def _say(msg: str) -> None:
    if is_main_process():
        print(msg, flush=True)


def _write_scores(run_dir: Path, method: str, labels: np.ndarray, scores: np.ndarray,
                  cfg: dict[str, Any]) -> dict[str, Any]:
    """Save the test-set scores and return (and print) this run's metrics."""
    from flowctl.metrics.sic import anomaly_metrics

    scores = np.asarray(scores, np.float64)
    bad = ~np.isfinite(scores)
    if bad.all():
        raise UserError(f"{method}: every test score is NaN/inf; the model is unusable")
    if bad.any():  # outside a density's domain: never selected, still counted
        scores = np.where(bad, scores[~bad].min() - 1.0, scores)
    m = anomaly_metrics(labels, scores)
    m.update({"method": method, "seed": cfg.get("seed"), "n_test": len(labels),
              "n_unscorable": int(bad.sum())})
    if is_main_process():
        write_npz(run_dir / SCORES, labels=labels.astype(np.int8), scores=scores,
                  mode=np.array("test"))
    update_metrics_json(run_dir, {"scores": m})
    _say(f"{method}: test AUC {m['auc']:.4f}, max SIC {m['max_sic']:.2f} at TPR "
         f"{m['max_sic_tpr']:.3f}, rejection 1/FPR {m['rejection_tpr0.2']:.1f} at TPR 0.2 and "
         f"{m['rejection_tpr0.5']:.1f} at TPR 0.5 ({len(labels)} test events)")
    return m


# --------------------------------------------------------------------------- density


def _flow_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    spec = dict(cfg["flow"])
    spec.setdefault("features", 4)
    spec.setdefault("context", 1)
    want = 4
    if int(spec["features"]) != want or int(spec["context"]) != 1:
        raise UserError(f"flow.features must be {want} and flow.context 1 (x = mj1, dmj, "
                        f"tau21j1, tau21j2 given mjj), got {spec['features']} and "
                        f"{spec['context']}")
    return spec


#: ``compile: auto`` compiles a density flow's loss from this many optimizer steps on. The
#: compile takes ~40 s (CATHODE's affine MAF) to ~135 s (the CPU preset's RQ-spline MAF, two
#: graphs) and saves ~6 ms (affine, batch 256, 2 threads) or ~11 ms (RQS, batch 1024, 1 thread)
#: per step, so it pays from roughly 10^4 steps; twice that, for a margin, takes in the full
#: configs' 100 epochs and leaves the presets eager.
AUTO_COMPILE_MIN_STEPS = 20_000


def _compile_setting(cfg: dict[str, Any]) -> bool | str:
    """The top-level ``compile`` key (auto | true | false; absent: false)."""
    from flowctl.training.compiled_loss import check_setting

    try:
        return check_setting(cfg.get("compile", False))
    except ValueError as err:
        raise UserError(str(err)) from None


def _compile_density(cfg: dict[str, Any], n_train: int) -> bool:
    """Whether ``_fit_density`` compiles its loss: ``compile`` true/false, or auto (from
    :data:`AUTO_COMPILE_MIN_STEPS` optimizer steps on, training on a CPU with a C++ compiler)."""
    from flowctl.training.compiled_loss import compile_wanted

    tr = cfg["trainer"]
    steps = int(tr.get("epochs") or 0) * -(-n_train // int(tr.get("batch_size") or 1))
    return compile_wanted(_compile_setting(cfg), steps, AUTO_COMPILE_MIN_STEPS,
                          str(tr.get("device", "auto")))


def _fit_density(cfg: dict[str, Any], train_rows: np.ndarray, val_rows: np.ndarray,
                 run_dir: Path, label: str) -> dict[str, Any]:
    """Train p(x | mjj) on feature rows; checkpoints (and the kept epochs) in ``run_dir``."""
    from torch.utils.data import TensorDataset

    from flowctl.anomaly.density import conditional_nll
    from flowctl.training import seed_everything
    from flowctl.training import train as fit
    from flowctl.training.compiled_loss import CompiledLoss

    def ds(rows: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.as_tensor(rows[:, 1:5], dtype=torch.float32),
                             torch.as_tensor(rows[:, 0:1], dtype=torch.float32))

    seed_everything(int(cfg["trainer"].get("seed", 0)))
    flow = build_flow(_flow_spec(cfg))
    tr = ds(train_rows)
    flow.initialize(tr.tensors[0], tr.tensors[1])
    compiled = _compile_density(cfg, len(train_rows))
    _say(f"{label}: {len(train_rows)} training / {len(val_rows)} validation events, "
         f"{sum(p.numel() for p in flow.parameters())} parameters"
         + (", loss compiled (torch.compile)" if compiled else ""))
    loss = CompiledLoss(conditional_nll) if compiled else conditional_nll
    summary = fit(flow, loss, tr, ds(val_rows), cfg["trainer"], run_dir, run_config=cfg)
    return {"n_train": len(train_rows), "n_val": len(val_rows), "compiled": compiled,
            "best_val_nll": summary.get("best_val_loss"), "best_epoch": summary.get("best_epoch"),
            "epochs": summary.get("epochs"), "top_epochs": summary.get("top_epochs"),
            "wall_s": summary.get("wall_s")}


def _ensemble(cfg: dict[str, Any], run_dir: Path):
    from flowctl.anomaly.density import load_ensemble
    from flowctl.training import TrainingError

    try:
        return load_ensemble(_flow_spec(cfg), run_dir, int(cfg.get("ensemble", 10)))
    except (ValueError, TrainingError) as exc:
        raise UserError(f"run directory {run_dir}: {exc}") from None


def _sideband_run(cfg: dict[str, Any], rd: Path) -> Path:
    """A CATHODE/ANODE run whose sideband flow ANODE may reuse: same data, trained."""
    from flowctl.apps.common import check_run_dir

    check_run_dir(rd, need_checkpoint=True)
    rc = read_config(rd)
    if rc.get("app") != "anomaly" or rc.get("method") not in DENSITY_METHODS:
        raise UserError(f"sideband_run={rd} is not a cathode/anode run")
    if data_signature(rc["data"]) != data_signature(cfg["data"]) or \
            rc["data"].get("max_sb_events") != cfg["data"].get("max_sb_events"):
        raise UserError(f"sideband_run={rd} was trained on other data (data.* differ)")
    return rd


def _anode_scores(cfg: dict[str, Any], run_dir: Path, test: np.ndarray) -> np.ndarray:
    from flowctl.anomaly.density import ensemble_log_prob

    x, m = test[:, 1:5], test[:, 0]
    lp_sr = ensemble_log_prob(_ensemble(cfg, run_dir / "inner"), x, m)
    sb_run = _sideband_run(cfg, Path(str(cfg["sideband_run"]))) if cfg.get("sideband_run") \
        else run_dir
    lp_sb = ensemble_log_prob(_ensemble(read_config(sb_run), sb_run), x, m)
    with np.errstate(invalid="ignore"):
        return lp_sr - lp_sb


# --------------------------------------------------------------------------- classifiers


def _labelled(one: np.ndarray, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of label 1 then label 0: ``(rows [N, 6], y [N], unit weights [N])``."""
    rows = np.concatenate([one, zero])
    y = np.concatenate([np.ones(len(one)), np.zeros(len(zero))])
    return rows, y, np.ones(len(y))


def _classifier_sets(cfg: dict[str, Any], method: str, sp: AnomalySplits
                     ) -> tuple[np.ndarray, ...]:
    """``(x_tr, y_tr, w_tr, x_va, y_va, w_va)`` of a classifier-only method."""
    from flowctl.anomaly.classifier import cwola_weights

    if method == "cwola":
        out = []
        for sr_rows, sb_rows in ((sp.sr_train, sp.cwola_train), (sp.sr_val, sp.cwola_val)):
            rows, y, _ = _labelled(sr_rows, sb_rows)
            w = cwola_weights(rows[:, 0], y == 1, sr_center=0.5 * (sp.sr[0] + sp.sr[1]))
            out.append((rows, y, w))
    elif method == "idealized":
        sp.need("bkg_train")
        out = [_labelled(sp.sr_train, sp.bkg_train), _labelled(sp.sr_val, sp.bkg_val)]
    else:  # supervised
        sp.need("bkg_train", "sig_train")
        out = [_labelled(sp.sig_train, sp.bkg_train), _labelled(sp.sig_val, sp.bkg_val)]
    (r_tr, y_tr, w_tr), (r_va, y_va, w_va) = out
    return _inputs(cfg, r_tr), y_tr, w_tr, _inputs(cfg, r_va), y_va, w_va


def _train_classifier(cfg: dict[str, Any], run_dir: Path, sets: tuple[np.ndarray, ...],
                      label: str):
    from flowctl.anomaly.classifier import train_weak_classifier

    ccfg = _classifier_cfg(cfg)
    x_tr, y_tr, w_tr, x_va, y_va, w_va = sets
    _say(f"{label}: classifier {list(ccfg.layers)} on {len(x_tr)} train ({int(y_tr.sum())} "
         f"label-1) / {len(x_va)} val events, {ccfg.epochs} epochs x {ccfg.n_runs} run(s), "
         f"top {ccfg.top_k} epochs ensembled")
    every = max(1, ccfg.epochs // 10)

    def progress(row: dict[str, float]) -> None:
        if int(row["epoch"]) % every == 0:
            _say(f"  run {int(row['run'])} epoch {int(row['epoch'])}: train "
                 f"{row['train_loss']:.5f} val {row['val_loss']:.5f} ({row['wall_s']:.0f} s)")

    clf = train_weak_classifier(x_tr, y_tr, x_va, y_va, ccfg, w_train=w_tr, w_val=w_va,
                                progress=progress)
    if is_main_process():
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        clf.save(run_dir / CLASSIFIER)
    return clf


# --------------------------------------------------------------------------- data only (k-fold)


def _finite_scores(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN/inf scores (outside a density's domain) set below every finite one: never
    selected, still counted. Returns ``(scores, n_unscorable)``."""
    scores = np.asarray(scores, np.float64)
    bad = ~np.isfinite(scores)
    if bad.all():
        raise UserError("every score is NaN/inf; the model is unusable")
    if bad.any():
        scores = np.where(bad, scores[~bad].min() - 1.0, scores)
    return scores, int(bad.sum())


def _sculpt_window(cfg: dict[str, Any], sp: AnomalySplits, rows: np.ndarray) -> np.ndarray:
    """Rows ``[M, 6]`` with mjj inside the sculpting-check window (``eval.sculpt_width`` TeV
    either side of the SR)."""
    w = float((cfg.get("eval") or {}).get("sculpt_width", 0.8))
    m = rows[:, 0]
    return rows[(m >= sp.sr[0] - w) & (m <= sp.sr[1] + w)]


def _seed(cfg: dict[str, Any]) -> int:
    return int(cfg.get("seed") or 0)


def _write_kfold_scores(run_dir: Path, method: str, cfg: dict[str, Any], sp: AnomalySplits,
                        scores: np.ndarray, fold: np.ndarray, sb_rows: np.ndarray,
                        sb_scores: np.ndarray) -> dict[str, Any]:
    """``scores.npz`` of a data-only run: out-of-fold scores of every SR event with its row in
    the file (``index``), fold, mjj and truth label, plus scored sideband events for the
    sculpting check; returns (and prints) the run's metrics from the file's labels."""
    from flowctl.metrics.sic import anomaly_metrics, selection_at_fpr

    sr = sp.sr_data
    labels = sr[:, 5].astype(np.int8)
    scores, n_bad = _finite_scores(scores)
    sb_scores, _ = _finite_scores(sb_scores) if len(sb_scores) else (sb_scores, 0)
    if is_main_process():
        write_npz(run_dir / SCORES, labels=labels, scores=scores, index=sp.sr_index,
                  fold=fold.astype(np.int8), mjj=sr[:, 0], mode=np.array("kfold"),
                  k=np.array(_kfold_k(cfg)), sb_mjj=sb_rows[:, 0],
                  sb_labels=sb_rows[:, 5].astype(np.int8),
                  sb_scores=np.asarray(sb_scores, np.float64))
    m: dict[str, Any] = {"method": method, "seed": cfg.get("seed"), "mode": "kfold",
                         "k": _kfold_k(cfg), "n_scored": len(labels),
                         "n_signal": int(labels.sum()), "n_unscorable": n_bad,
                         "n_sideband_scored": len(sb_rows)}
    if 0 < labels.sum() < len(labels):
        m.update(anomaly_metrics(labels, scores))
        for f in CUT_FPRS:
            m[f"gain_at_fpr{f:g}"] = selection_at_fpr(labels, scores, f)["gain"]
        _say(f"{method}: out-of-fold ({m['k']} folds) AUC {m['auc']:.4f}, max SIC "
             f"{m['max_sic']:.2f} at TPR {m['max_sic_tpr']:.3f}; significance gain "
             f"{m['gain_at_fpr0.01']:.2f} at 1 % and {m['gain_at_fpr0.001']:.2f} at 0.1 % "
             f"background efficiency ({len(labels)} SR events, {int(labels.sum())} signal)")
    else:
        m["note"] = "the SR data hold one class only: no ROC/SIC from the file's labels"
        _say(f"{method}: {len(labels)} SR events scored out-of-fold; {m['note']}")
    update_metrics_json(run_dir, {"scores": _null(m)})
    return m


def _fold_progress(label: str, epochs: int):
    """One line per fold and run, after its last epoch."""
    def progress(row: dict[str, float]) -> None:
        if int(row["epoch"]) == epochs:
            _say(f"  {label} fold {int(row['fold'])} run {int(row['run'])} epoch "
                 f"{int(row['epoch'])}: val {row['val_loss']:.5f} ({row['wall_s']:.0f} s)")
    return progress


def _kfold_classifier(cfg: dict[str, Any], run_dir: Path, x: np.ndarray, y: np.ndarray,
                      w: np.ndarray | None, label: str):
    """k-fold classifiers (each with its epoch ensemble) on ``x [N, F]``, labels ``y``; the
    fold models go to ``checkpoints/classifier_fold{i}.pt``."""
    from flowctl.anomaly.classifier import kfold_fit_score

    ccfg = _classifier_cfg(cfg)
    k = _kfold_k(cfg)
    _say(f"{label}: {k}-fold classifiers {list(ccfg.layers)} on {len(x)} events "
         f"({int(y.sum())} label-1), {ccfg.epochs} epochs x {ccfg.n_runs} run(s) per fold, "
         f"top {ccfg.top_k} epochs ensembled")
    try:
        res = kfold_fit_score(x, y, ccfg, k, w, progress=_fold_progress(label, ccfg.epochs))
    except ValueError as exc:
        raise UserError(f"{label}: {exc}") from None
    if is_main_process():
        for i, clf in enumerate(res.classifiers):
            clf.save(run_dir / "checkpoints" / f"classifier_fold{i}.pt")
    return res


def _cathode_kfold(cfg: dict[str, Any], run_dir: Path, sp: AnomalySplits,
                   samples: np.ndarray) -> dict[str, Any]:
    """CATHODE on data alone: SR data (1) vs the samples (0), k folds of both."""
    sr = sp.sr_data
    rows = np.concatenate([sr[:, :5], samples[:, :5]])
    y = np.r_[np.ones(len(sr)), np.zeros(len(samples))]
    res = _kfold_classifier(cfg, run_dir, _inputs(cfg, rows), y, None,
                            "cathode: SR data vs samples")
    sb = _sculpt_window(cfg, sp, sp.sb_all)          # the classifiers never saw sidebands
    return _write_kfold_scores(run_dir, "cathode", cfg, sp, res.scores[:len(sr)],
                               res.fold[:len(sr)], sb,
                               res.predict_unseen(_inputs(cfg, sb), _seed(cfg))[0])


def _cwola_kfold(cfg: dict[str, Any], run_dir: Path, sp: AnomalySplits) -> dict[str, Any]:
    """CWoLa on data alone: SR (1) vs the adjacent strips (0), k folds of both; the strips
    are scored out-of-fold too, the other sideband events by the mean of the fold models."""
    from flowctl.anomaly.classifier import cwola_weights

    sr = sp.sr_data
    strips = np.concatenate([sp.cwola_train, sp.cwola_val])
    rows = np.concatenate([sr, strips])
    y = np.r_[np.ones(len(sr)), np.zeros(len(strips))]
    try:
        w = cwola_weights(rows[:, 0], y == 1, sr_center=0.5 * (sp.sr[0] + sp.sr[1]))
    except ValueError as exc:
        raise UserError(f"cwola: {exc}") from None
    res = _kfold_classifier(cfg, run_dir, _inputs(cfg, rows), y, w, "cwola: SR vs strips")
    width = float(cfg["data"].get("cwola_width", 0.2))
    sb = _sculpt_window(cfg, sp, sp.sb_all)
    lo, hi = sp.sr
    outer = sb[(sb[:, 0] < lo - width) | (sb[:, 0] > hi + width)]
    sb_rows = np.concatenate([strips, outer])
    sb_scores = np.r_[res.scores[len(sr):], res.predict_unseen(_inputs(cfg, outer),
                                                               _seed(cfg))[0]]
    return _write_kfold_scores(run_dir, "cwola", cfg, sp, res.scores[:len(sr)],
                               res.fold[:len(sr)], sb_rows, sb_scores)


def _anode_kfold(cfg: dict[str, Any], run_dir: Path, sp: AnomalySplits,
                 sb_run: Path) -> dict[str, Any]:
    """ANODE on data alone: one SR flow per fold (train on k-2 folds, validate on one), the
    held-out fold scored with ``log p_SR - log p_SB``. Sideband events of the sideband flow's
    validation set are scored too, each with one fold's SR flow dealt at random (sculpting
    check)."""
    from flowctl.anomaly.density import ensemble_log_prob

    k = _kfold_k(cfg)
    sr = sp.sr_data
    rng = np.random.default_rng([int(cfg["data"].get("split_seed", 0)), 23])
    fold = rng.permutation(len(sr)) % k            # random, sizes within one of each other
    sb = _sculpt_window(cfg, sp, sp.sb_val)
    lp_sr = np.full(len(sr), np.nan)
    lp_sb_rows = np.zeros((k, len(sb)))
    folds_info = []
    for i in range(k):
        v = (i + 1) % k
        tr, va, te = (fold != i) & (fold != v), fold == v, fold == i
        fcfg = {**cfg, "trainer": {**cfg["trainer"],
                                   "seed": int(cfg["trainer"].get("seed", 0)) + 7919 * i}}
        fdir = run_dir / "inner" / f"fold{i}"
        folds_info.append(_fit_density(fcfg, sr[tr], sr[va], fdir,
                                       f"SR flow p(x|m), fold {i} of {k}"))
        flows = _ensemble(cfg, fdir)
        lp_sr[te] = ensemble_log_prob(flows, sr[te, 1:5], sr[te, 0])
        lp_sb_rows[i] = ensemble_log_prob(flows, sb[:, 1:5], sb[:, 0])
    bg = _ensemble(read_config(sb_run), sb_run)
    with np.errstate(invalid="ignore", over="ignore"):
        scores = lp_sr - ensemble_log_prob(bg, sr[:, 1:5], sr[:, 0])
        sb_fold = np.random.default_rng(_seed(cfg)).permutation(len(sb)) % k
        lp_one = lp_sb_rows[sb_fold, np.arange(len(sb))]
        sb_scores = lp_one - ensemble_log_prob(bg, sb[:, 1:5], sb[:, 0])
    out = _write_kfold_scores(run_dir, "anode", cfg, sp, scores, fold, sb, sb_scores)
    out["sr_flows"] = folds_info
    return out


# --------------------------------------------------------------------------- commands


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """CATHODE: the sideband flow. ANODE: sideband and SR flows, then scores. CWoLa /
    idealized / supervised: the classifier, then scores. In data-only mode (``eval.mode``
    kfold) ANODE and CWoLa train one model per fold and score the SR data out-of-fold."""
    method = _method(cfg)
    mode = _check_mode(cfg, method)
    _compile_setting(cfg)  # a bad value stops before any data is read
    t0 = time.perf_counter()
    need_test = method != "cathode" and mode == "test"
    sp = _splits(cfg, need_test=need_test)
    _check_inputs(cfg, method, mode, sp)
    write_config(run_dir, cfg)
    info = sp.info
    _say(f"{method}: {info['n_events']} events, SR {sp.sr[0]}-{sp.sr[1]} TeV: "
         f"{info['sr_signal']} S / {info['sr_background']} B (S/B {info['sr_s_over_b']:.3%}, "
         f"S/sqrt(B) {info['sr_s_over_sqrt_b']:.2f}); scoring: "
         + ("labelled test set" if mode == "test" else
            f"data alone, {_kfold_k(cfg)}-fold out-of-fold"))
    out: dict[str, Any] = {"command": "train", "method": method, "mode": mode, "data": info}
    reuse = cfg.get("sideband_run") if method == "anode" else None
    if reuse:
        out["sideband_flow"] = {"reused": str(_sideband_run(cfg, Path(str(reuse))))}
        _say(f"anode: sideband flow of {reuse} reused")
    elif method in DENSITY_METHODS:
        out["sideband_flow"] = _fit_density(cfg, sp.sb_train, sp.sb_val, run_dir,
                                            "sideband flow p(x|m)")
    if method == "anode" and mode == "kfold":
        sb_run = _sideband_run(cfg, Path(str(reuse))) if reuse else run_dir
        out["kfold"] = _anode_kfold(cfg, run_dir, sp, sb_run)
    elif method == "anode":
        inner = run_dir / "inner"
        out["sr_flow"] = _fit_density(cfg, sp.sr_train, sp.sr_val, inner, "SR flow p(x|m)")
        assert sp.test is not None
        out["test"] = _write_scores(run_dir, method, sp.test[:, 5],
                                    _anode_scores(cfg, run_dir, sp.test), cfg)
    elif method == "cwola" and mode == "kfold":
        out["kfold"] = _cwola_kfold(cfg, run_dir, sp)
    elif method not in DENSITY_METHODS:
        clf = _train_classifier(cfg, run_dir, _classifier_sets(cfg, method, sp), method)
        out["classifier"] = {"epochs": clf.epochs, "wall_s": round(clf.wall_s, 1)}
        assert sp.test is not None
        out["test"] = _write_scores(run_dir, method, sp.test[:, 5],
                                    clf.predict(_inputs(cfg, sp.test)), cfg)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    update_metrics_json(run_dir, {"train": out})
    _say(f"train: {method} done in {out['wall_s']:.1f} s; run directory: {run_dir}")
    return out


def _check_inputs(cfg: dict[str, Any], method: str, mode: str, sp: AnomalySplits) -> None:
    """Too few events or a constant feature in any set a method will train on: one
    UserError line before any training."""
    feats = (1, 2, 3, 4)
    if method in DENSITY_METHODS and not cfg.get("sideband_run"):
        _check_rows(sp.sb_train, "sideband training events (data.path outside data.sr)",
                    MIN_FLOW_EVENTS)
        _check_rows(sp.sb_val, "sideband validation events (data.sb_val_fraction)", 2)
    if mode == "kfold":
        k = _kfold_k(cfg)
        _check_rows(sp.sr_data, f"SR events of data.path for {k} folds (eval.k)",
                    max(k * MIN_FOLD_EVENTS, MIN_FLOW_EVENTS * k // max(k - 2, 1)), feats)
        if method == "cwola":
            _check_rows(np.concatenate([sp.cwola_train, sp.cwola_val]),
                        f"CWoLa sideband strips for {k} folds", k * MIN_FOLD_EVENTS, feats)
        return
    minimum = MIN_FLOW_EVENTS if method == "anode" else 2
    _check_rows(sp.sr_train, "SR training events (data.sr, data.sr_val_fraction)", minimum,
                feats)
    _check_rows(sp.sr_val, "SR validation events (data.sr_val_fraction)", 2, feats)
    if method == "cwola":
        _check_rows(sp.cwola_train, "CWoLa sideband strips (data.cwola_width)", 2, feats)


def _sr_domain(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rows[:, 1:5].min(0), rows[:, 1:5].max(0)


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """CATHODE: ``sample.n`` background samples in the SR, mjj from a KDE of the SR data
    (bandwidth ``sample.kde_bandwidth`` in logit space), n/k from each of the k kept epochs.
    Samples outside the SR data's feature range are dropped (CATHODE does the same)."""

    from flowctl.anomaly.density import kde_sample, sample_ensemble

    method = _method(cfg)
    if method != "cathode":
        raise UserError(f"`sample` makes CATHODE's SR background samples; method {method} "
                        "does not use them")
    sc = dict(cfg.get("sample") or {})
    n = int(sc.get("n", 400000))
    if n <= 0:
        raise UserError(f"sample.n must be a positive integer, got {n}")
    sp = _splits(cfg)
    sr_rows = np.concatenate([sp.sr_train, sp.sr_val])
    rng = np.random.default_rng([int(cfg.get("seed", 0)), 17])
    torch.manual_seed(int(cfg.get("seed", 0)))
    flows = _ensemble(cfg, run_dir)
    t0 = time.perf_counter()
    m = kde_sample(sr_rows[:, 0], n, float(sc.get("kde_bandwidth", 0.01)), rng)
    x = sample_ensemble(flows, m)
    dt = time.perf_counter() - t0
    lo, hi = _sr_domain(sr_rows)
    keep = np.isfinite(x).all(1) & (x >= lo).all(1) & (x <= hi).all(1)
    rows = np.concatenate([m[keep, None], x[keep]], axis=1)
    path = run_dir / SAMPLES
    if is_main_process():
        write_h5(path, {"samples": rows.astype(np.float32)},
                 {"n_drawn": n, "n_models": len(flows)},
                 dataset_attrs={"samples": {"columns": ["mjj", "mj1", "dmj", "tau21j1",
                                                        "tau21j2"]}})
    out = {"command": "sample", "n_drawn": n, "n_kept": int(keep.sum()),
           "n_models": len(flows), "seconds": round(dt, 2),
           "samples_per_s": round(n / max(dt, 1e-9), 1), "file": str(path)}
    update_metrics_json(run_dir, {"sample": out})
    _say(f"sample: {n} SR samples from {len(flows)} kept epoch(s) in {dt:.1f} s; "
         f"{out['n_kept']} inside the SR data's range -> {path}")
    return out


def _read_samples(run_dir: Path) -> np.ndarray:
    import h5py

    path = run_dir / SAMPLES
    if not path.exists():
        raise UserError(f"{path} does not exist: run `flowctl sample run={run_dir}` first")
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["samples"], np.float64)
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: cannot read dataset 'samples' ({exc})") from None


def classify(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """CATHODE: classifier SR data (label 1) vs the run's samples (label 0), with the samples
    shared between train and val in proportion to the data (CATHODE's oversampling); then
    the test scores. In data-only mode: k-fold classifiers over SR data and samples, every
    SR event scored out-of-fold."""
    method = _method(cfg)
    if method != "cathode":
        raise UserError(f"method {method} trains its classifier in `flowctl train`; "
                        "`classify` is CATHODE's step after `sample`")
    mode = _check_mode(cfg, method)
    t0 = time.perf_counter()
    sp = _splits(cfg, need_test=mode == "test")
    samples = _read_samples(run_dir)
    if len(samples) < 2:
        raise UserError(f"{run_dir / SAMPLES} holds {len(samples)} usable samples")
    if mode == "kfold":
        _check_inputs(cfg, method, mode, sp)
        _check_rows(samples, f"{run_dir / SAMPLES}", _kfold_k(cfg) * MIN_FOLD_EVENTS,
                    (1, 2, 3, 4))
        out = {"command": "classify", "method": method, "mode": mode,
               "n_samples": len(samples), "kfold": _cathode_kfold(cfg, run_dir, sp, samples)}
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        update_metrics_json(run_dir, {"classify": out})
        return out
    rows = np.concatenate([samples, np.zeros((len(samples), 1))], axis=1)  # + label 0
    k = round(len(rows) * len(sp.sr_train) / (len(sp.sr_train) + len(sp.sr_val)))
    (r_tr, y_tr, w_tr), (r_va, y_va, w_va) = (_labelled(sp.sr_train, rows[:k]),
                                              _labelled(sp.sr_val, rows[k:]))
    x_tr, x_va = _inputs(cfg, r_tr), _inputs(cfg, r_va)
    clf = _train_classifier(cfg, run_dir, (x_tr, y_tr, w_tr, x_va, y_va, w_va),
                            "cathode: SR data vs samples")
    assert sp.test is not None
    out: dict[str, Any] = {"command": "classify", "method": method,
                           "n_samples": len(samples), "epochs": clf.epochs}
    out["test"] = _write_scores(run_dir, method, sp.test[:, 5],
                                clf.predict(_inputs(cfg, sp.test)), cfg)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    update_metrics_json(run_dir, {"classify": out})
    return out


# --------------------------------------------------------------------------- evaluate


def _candidate_runs(cfg: dict[str, Any], run_dir: Path) -> list[Path]:
    ev = dict(cfg.get("eval") or {})
    roots = [Path(p) for p in (ev.get("search") or ["outputs"])]
    found = {run_dir.resolve()}
    for root in roots:
        if not root.is_dir():
            continue
        for depth in ("*/config.yaml", "*/*/config.yaml", "*/*/*/config.yaml"):
            found.update(p.parent.resolve() for p in root.glob(depth))
    return sorted(found)


def _read_config_or_none(rd: Path) -> dict[str, Any] | None:
    """A neighbouring run's config, or None if it is unreadable (then it is not ours)."""
    import yaml

    try:
        rc = read_config(rd)
    except (OSError, yaml.YAMLError):
        return None
    return rc if isinstance(rc, dict) else None


def _gather(cfg: dict[str, Any], run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Scores of every anomaly run on the same data: ``{method: [{run, seed, labels,
    scores}, ...]}``; of several runs with the same method and seed only the newest counts."""
    sig = data_signature(cfg["data"])
    mode = _mode(cfg)
    newest: dict[tuple[str, Any], Path] = {}   # one run per (method, seed): the newest
    for rd in _candidate_runs(cfg, run_dir):
        if not (rd / SCORES).exists():
            continue
        rc = _read_config_or_none(rd)
        if rc is None or rc.get("app") != "anomaly" or rc.get("method") not in METHODS:
            continue
        if data_signature(rc.get("data") or {}) != sig:
            continue
        try:
            if _mode(rc) != mode:       # test-set and out-of-fold scores are not mixed
                continue
        except UserError:
            continue
        key = (str(rc["method"]), rc.get("seed"))
        if key not in newest or _mtime(rd) > _mtime(newest[key]):
            newest[key] = rd
    out: dict[str, list[dict[str, Any]]] = {}
    for (method, seed), rd in sorted(newest.items(), key=lambda kv: str(kv[0])):
        with np.load(rd / SCORES) as z:
            entry = {"run": str(rd), "seed": seed, **{n: z[n] for n in z.files}}
        out.setdefault(method, []).append(entry)
    return {m: out[m] for m in METHODS if m in out}


def _mtime(rd: Path) -> float:
    return (rd / SCORES).stat().st_mtime


def _null(v: Any) -> Any:
    """``v`` with every non-finite float replaced by ``None`` (metrics.json holds no NaN/inf;
    e.g. a rejection with FPR 0, or a max SIC where no point passes the FPR floor)."""
    if isinstance(v, dict):
        return {k: _null(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_null(x) for x in v]
    return None if isinstance(v, float) and not np.isfinite(v) else v


def _run_metrics(e: dict[str, Any], floor: float) -> dict[str, Any]:
    """One run's numbers from its scores: ROC/SIC, the significance gain of cuts at fixed
    background efficiency and, with scored sidebands, the sideband flatness of those cuts."""
    from flowctl.anomaly.sculpting import sideband_flatness
    from flowctl.metrics.sic import anomaly_metrics, selection_at_fpr

    m: dict[str, Any] = dict(anomaly_metrics(e["labels"], e["scores"], floor))
    for f in CUT_FPRS:
        sel = selection_at_fpr(e["labels"], e["scores"], f)
        m[f"gain_at_fpr{f:g}"] = sel["gain"]
        m[f"tpr_at_fpr{f:g}"] = sel["tpr"]
        e.setdefault("thresholds", []).append(sel["threshold"])
        if "sb_scores" in e and len(e["sb_scores"]):
            fl = sideband_flatness(e["sb_mjj"], e["sb_scores"], sel["threshold"],
                                   e["bins"])
            m[f"sb_efficiency_at_fpr{f:g}"] = fl["efficiency"]
            if fl["chi2_ndf"] is not None:
                m[f"sb_chi2_ndf_at_fpr{f:g}"] = fl["chi2_ndf"]
    return m


def _template_truth(cfg: dict[str, Any], mode: str) -> np.ndarray | None:
    """True SR background rows ``[N, 6]`` for the template check: the extra QCD file's
    events (test mode) or the SR data's label-0 events (data-only mode, the file's labels);
    None without labels."""
    d = dict(cfg.get("data") or {})
    if mode == "test" and not d.get("extra_bkg"):
        return None
    sp = _splits(cfg, need_test=mode == "test")
    if mode == "test":
        parts = [p for p in (sp.bkg_train, sp.bkg_val) if p is not None]
        if sp.test is not None:
            parts.append(sp.test[sp.test[:, 5] == 0])
        return np.concatenate(parts) if parts else None
    sr = sp.sr_data
    return sr[sr[:, 5] == 0] if 0 < sr[:, 5].sum() < len(sr) else None


def _template_checks(cfg: dict[str, Any], mode: str,
                     entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The background-template diagnostic of every CATHODE run with samples (classifier
    true SR background vs the run's samples, :func:`flowctl.anomaly.template.template_check`);
    each run's result is kept in its metrics.json (``template_check``) and reused while its
    samples file and the settings are unchanged."""
    import json

    from flowctl.anomaly.summary import summarize_runs
    from flowctl.anomaly.template import template_check

    ev = dict(cfg.get("eval") or {})
    if not ev.get("template_check", True):
        return None
    epochs = ev.get("template_epochs", 10)
    max_events = ev.get("template_max_events", 100000)
    for key, v in (("template_epochs", epochs), ("template_max_events", max_events)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"eval.{key} must be a positive integer, got {v!r}")
    runs = [e for e in entries if (Path(e["run"]) / SAMPLES).exists()]
    if not runs:
        return None
    truth = _template_truth(cfg, mode)
    if truth is None:
        return None
    per_run: dict[str, dict[str, Any]] = {}
    for e in runs:
        rd = Path(e["run"])
        rc = read_config(rd)
        stamp = {"samples_mtime": (rd / SAMPLES).stat().st_mtime, "epochs": epochs,
                 "max_events": max_events, "inputs": rc.get("classifier_inputs", "features")}
        old = {}
        if (rd / "metrics.json").exists():
            try:
                old = json.loads((rd / "metrics.json").read_text()).get("template_check") or {}
            except (OSError, ValueError):
                old = {}
        if old.get("stamp") == stamp and old.get("auc") is not None:
            per_run[str(rd)] = old
            continue
        ccfg = _classifier_cfg({"classifier": {**(rc.get("classifier") or {}),
                                               "epochs": epochs,
                                               "top_k": min(3, epochs)}})
        samples = _read_samples(rd)
        names = FEATURE_NAMES[1:5] if stamp["inputs"] == "features" else FEATURE_NAMES
        try:
            res = template_check(_inputs(rc, truth), _inputs(rc, samples[:, :5]), ccfg,
                                 max_events, _seed(rc), names)
        except ValueError as exc:
            raise UserError(f"template check of {rd}: {exc}") from None
        res["stamp"] = stamp
        if is_writable(rd):  # a cache only: someone else's read-only run is left untouched
            update_metrics_json(rd, {"template_check": res})
        per_run[str(rd)] = res
    s = summarize_runs([{"t": {"auc": r["auc"]}} for r in per_run.values()])["t"]["auc"]
    out = {"auc": s, "auc_null_sd": max(r["auc_null_sd"] for r in per_run.values()),
           "truth": "extra SR background (labelled simulation)" if mode == "test" else
           "SR data with label 0 (the file's labels)", "runs": per_run}
    _say(f"background template (true SR background vs CATHODE samples, {len(per_run)} run(s)): "
         f"AUC {s['median']:.4f} [{s['q16']:.4f}, {s['q84']:.4f}] (0.5: samples "
         f"indistinguishable from the background; null spread {out['auc_null_sd']:.4f}); "
         "per feature: " + ", ".join(
             f"{k} {np.median([r['feature_auc'][k] for r in per_run.values()]):.3f}"
             for k in next(iter(per_run.values()))["feature_auc"]))
    return out


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """ROC (rejection 1/FPR) and SIC curves of every method that has run on this data (median
    and 16-84 % band over runs/seeds), with max SIC (FPR floor), rejection at TPR 0.2 / 0.5,
    the max SIC of the median curve (only with at least ``eval.min_runs`` runs, default 5),
    and the significance gain of cuts keeping 1 % and 0.1 % of the SR background; for
    data-only runs also the sideband mjj shape before/after those cuts (sculpting). Into
    metrics.json and plots/roc_sic.png (+ plots/sculpting.png)."""
    from flowctl.anomaly.sculpting import mjj_bins
    from flowctl.anomaly.summary import format_table, max_sic_of_median, summarize_runs
    from flowctl.metrics.sic import FPR_FLOOR, roc_curve

    ev = dict(cfg.get("eval") or {})
    floor = float(ev.get("fpr_floor", FPR_FLOOR))
    min_runs = ev.get("min_runs", 5)
    if isinstance(min_runs, bool) or not isinstance(min_runs, int) or min_runs < 1:
        raise UserError(f"eval.min_runs must be a positive integer, got {min_runs!r}")
    mode = _mode(cfg)
    runs = _gather(cfg, run_dir)
    if not runs:
        raise UserError(f"no anomaly scores on this data yet ({run_dir / SCORES} missing): run "
                        "`flowctl train` (and, for CATHODE, `sample` and `classify`) first")
    sr = [float(v) for v in (cfg["data"].get("sr") or (3.3, 3.7))]
    bins = mjj_bins(sr, float(ev.get("sculpt_width", 0.8)))
    per_run: list[dict[str, dict[str, Any]]] = []
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    table: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for method, entries in runs.items():
        kept = []
        for e in entries:
            if not 0 < int(np.sum(e["labels"])) < len(e["labels"]):
                skipped[e["run"]] = "labels of one class only (no ROC)"
                continue
            e["bins"] = bins
            per_run.append({method: _run_metrics(e, floor)})
            fpr, tpr, _ = roc_curve(e["labels"], e["scores"])
            curves.setdefault(method, []).append((fpr, tpr))
            kept.append(e)
        if kept:
            table[method] = {"runs": [e["run"] for e in kept],
                             "seeds": [e["seed"] for e in kept]}
    if not per_run:
        raise UserError(f"no run on this data has scores of both classes: {skipped}")
    summary = summarize_runs(per_run)
    for method, c in curves.items():
        best, at_tpr, at_fpr = max_sic_of_median(c, fpr_floor=floor, min_runs=min_runs)
        summary[method]["max_sic_of_median"] = _null(best)
        summary[method]["max_sic_of_median_tpr"] = _null(at_tpr)
        summary[method]["max_sic_of_median_fpr"] = _null(at_fpr)
        if len(c) < min_runs:
            summary[method]["note"] = (f"{len(c)} run(s) < eval.min_runs={min_runs}: no max "
                                       "SIC of the median curve; per-run numbers only")
        summary[method].update(table[method])
    plots = []
    if is_main_process() and ev.get("plots", True):
        from flowctl.plots.anomaly import roc_sic_figure, sculpting_figure
        from flowctl.plots.density import save

        plots.append(str(save(roc_sic_figure(curves, fpr_floor=floor),
                              run_dir / "plots" / "roc_sic.png")))
        firsts = {m: es[0] for m, es in runs.items()
                  if es and "sb_scores" in es[0] and "thresholds" in es[0]}
        if firsts:
            panels = {m: (e["mjj"], e["scores"], e["sb_mjj"], e["sb_scores"],
                          dict(zip(CUT_FPRS, e["thresholds"]))) for m, e in firsts.items()}
            plots.append(str(save(sculpting_figure(panels, bins, sr),
                                  run_dir / "plots" / "sculpting.png")))
    out = {"command": "evaluate", "mode": mode, "fpr_floor": floor, "min_runs": min_runs,
           "methods": summary, "plots": plots}
    tc = _template_checks(cfg, mode, runs.get("cathode", []))
    if tc is not None:
        out["template_check"] = tc
    if skipped:
        out["skipped"] = skipped
    update_metrics_json(run_dir, {"evaluate": _null(out)})
    if is_main_process():
        print(format_table(summary))
        if plots:
            print(f"plots: {run_dir / 'plots'}")
    return out


COMMANDS = {"train": train, "sample": sample, "classify": classify, "evaluate": evaluate}
