"""Resonant anomaly detection on LHC-Olympics dijets: CATHODE, ANODE, CWoLa hunting, and the
idealized-AD and fully supervised reference classifiers (reference/anomaly.md).

One config per method (``method:``); every method ends by writing ``scores.npz`` (anomaly
scores of the labelled SR test set) into its run directory, and ``evaluate`` gathers the
scores of every run on the same data, so one ROC/SIC figure compares all methods that ran.

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
from flowctl.data.table import DataError

__all__ = ["COMMANDS", "METHODS", "classify", "evaluate", "sample", "train"]

METHODS = ("cathode", "anode", "cwola", "idealized", "supervised")
DENSITY_METHODS = ("cathode", "anode")
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
        tmp = run_dir / (SCORES + ".tmp.npz")
        np.savez_compressed(tmp, labels=labels.astype(np.int8), scores=scores)
        tmp.replace(run_dir / SCORES)
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


def _fit_density(cfg: dict[str, Any], train_rows: np.ndarray, val_rows: np.ndarray,
                 run_dir: Path, label: str) -> dict[str, Any]:
    """Train p(x | mjj) on feature rows; checkpoints (and the kept epochs) in ``run_dir``."""
    from torch.utils.data import TensorDataset

    from flowctl.anomaly.density import conditional_nll
    from flowctl.training import seed_everything
    from flowctl.training import train as fit

    def ds(rows: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.as_tensor(rows[:, 1:5], dtype=torch.float32),
                             torch.as_tensor(rows[:, 0:1], dtype=torch.float32))

    seed_everything(int(cfg["trainer"].get("seed", 0)))
    flow = build_flow(_flow_spec(cfg))
    tr = ds(train_rows)
    flow.initialize(tr.tensors[0], tr.tensors[1])
    _say(f"{label}: {len(train_rows)} training / {len(val_rows)} validation events, "
         f"{sum(p.numel() for p in flow.parameters())} parameters")
    summary = fit(flow, conditional_nll, tr, ds(val_rows), cfg["trainer"], run_dir,
                  run_config=cfg)
    return {"n_train": len(train_rows), "n_val": len(val_rows),
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


# --------------------------------------------------------------------------- commands


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """CATHODE: the sideband flow. ANODE: sideband and SR flows, then test scores. CWoLa /
    idealized / supervised: the classifier, then test scores."""
    method = _method(cfg)
    t0 = time.perf_counter()
    need_test = method not in ("cathode",)
    sp = _splits(cfg, need_test=need_test)
    write_config(run_dir, cfg)
    info = sp.info
    _say(f"{method}: {info['n_events']} events, SR {sp.sr[0]}-{sp.sr[1]} TeV: "
         f"{info['sr_signal']} S / {info['sr_background']} B (S/B {info['sr_s_over_b']:.3%}, "
         f"S/sqrt(B) {info['sr_s_over_sqrt_b']:.2f})")
    out: dict[str, Any] = {"command": "train", "method": method, "data": info}
    reuse = cfg.get("sideband_run") if method == "anode" else None
    if reuse:
        out["sideband_flow"] = {"reused": str(_sideband_run(cfg, Path(str(reuse))))}
        _say(f"anode: sideband flow of {reuse} reused")
    elif method in DENSITY_METHODS:
        out["sideband_flow"] = _fit_density(cfg, sp.sb_train, sp.sb_val, run_dir,
                                            "sideband flow p(x|m)")
    if method == "anode":
        inner = run_dir / "inner"
        out["sr_flow"] = _fit_density(cfg, sp.sr_train, sp.sr_val, inner, "SR flow p(x|m)")
        assert sp.test is not None
        out["test"] = _write_scores(run_dir, method, sp.test[:, 5],
                                    _anode_scores(cfg, run_dir, sp.test), cfg)
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


def _sr_domain(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rows[:, 1:5].min(0), rows[:, 1:5].max(0)


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """CATHODE: ``sample.n`` background samples in the SR, mjj from a KDE of the SR data
    (bandwidth ``sample.kde_bandwidth`` in logit space), n/k from each of the k kept epochs.
    Samples outside the SR data's feature range are dropped (CATHODE does the same)."""
    import h5py

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
        tmp = path.with_suffix(".h5.tmp")
        with h5py.File(tmp, "w") as f:
            d = f.create_dataset("samples", data=rows.astype(np.float32), compression="gzip",
                                 compression_opts=1)
            d.attrs["columns"] = ["mjj", "mj1", "dmj", "tau21j1", "tau21j2"]
            f.attrs["n_drawn"] = n
            f.attrs["n_models"] = len(flows)
        tmp.replace(path)
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
    the test scores."""
    method = _method(cfg)
    if method != "cathode":
        raise UserError(f"method {method} trains its classifier in `flowctl train`; "
                        "`classify` is CATHODE's step after `sample`")
    t0 = time.perf_counter()
    sp = _splits(cfg, need_test=True)
    samples = _read_samples(run_dir)
    if len(samples) < 2:
        raise UserError(f"{run_dir / SAMPLES} holds {len(samples)} usable samples")
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
    newest: dict[tuple[str, Any], Path] = {}   # one run per (method, seed): the newest
    for rd in _candidate_runs(cfg, run_dir):
        if not (rd / SCORES).exists():
            continue
        rc = _read_config_or_none(rd)
        if rc is None or rc.get("app") != "anomaly" or rc.get("method") not in METHODS:
            continue
        if data_signature(rc.get("data") or {}) != sig:
            continue
        key = (str(rc["method"]), rc.get("seed"))
        if key not in newest or _mtime(rd) > _mtime(newest[key]):
            newest[key] = rd
    out: dict[str, list[dict[str, Any]]] = {}
    for (method, seed), rd in sorted(newest.items(), key=lambda kv: str(kv[0])):
        with np.load(rd / SCORES) as z:
            entry = {"run": str(rd), "seed": seed, "labels": z["labels"], "scores": z["scores"]}
        out.setdefault(method, []).append(entry)
    return {m: out[m] for m in METHODS if m in out}


def _mtime(rd: Path) -> float:
    return (rd / SCORES).stat().st_mtime


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """ROC (rejection 1/FPR) and SIC curves of every method that has run on this data (median
    and 16-84 % band over runs/seeds), with max SIC (FPR floor), rejection at TPR 0.2 / 0.5,
    and the max SIC of the median curve, into metrics.json and plots/roc_sic.png."""
    from flowctl.anomaly.summary import format_table, max_sic_of_median, summarize_runs
    from flowctl.metrics.sic import FPR_FLOOR, anomaly_metrics, roc_curve

    ev = dict(cfg.get("eval") or {})
    floor = float(ev.get("fpr_floor", FPR_FLOOR))
    runs = _gather(cfg, run_dir)
    if not runs:
        raise UserError(f"no anomaly scores on this data yet ({run_dir / SCORES} missing): run "
                        "`flowctl train` (and, for CATHODE, `sample` and `classify`) first")
    per_run: list[dict[str, dict[str, Any]]] = []
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    table: dict[str, Any] = {}
    for method, entries in runs.items():
        for e in entries:
            m = anomaly_metrics(e["labels"], e["scores"], floor)
            per_run.append({method: m})
            fpr, tpr, _ = roc_curve(e["labels"], e["scores"])
            curves.setdefault(method, []).append((fpr, tpr))
        table[method] = {"runs": [e["run"] for e in entries],
                         "seeds": [e["seed"] for e in entries]}
    summary = summarize_runs(per_run)
    for method, c in curves.items():
        best, at_tpr, at_fpr = max_sic_of_median(c, fpr_floor=floor,
                                                 min_runs=int(ev.get("min_runs", 1)))
        summary[method]["max_sic_of_median"] = best
        summary[method]["max_sic_of_median_tpr"] = at_tpr
        summary[method]["max_sic_of_median_fpr"] = at_fpr
        summary[method].update(table[method])
    plots = []
    if is_main_process() and ev.get("plots", True):
        from flowctl.plots.anomaly import roc_sic_figure
        from flowctl.plots.density import save

        plots.append(str(save(roc_sic_figure(curves, fpr_floor=floor),
                              run_dir / "plots" / "roc_sic.png")))
    out = {"command": "evaluate", "fpr_floor": floor, "methods": summary, "plots": plots}
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        print(format_table(summary))
        if plots:
            print(f"plots: {run_dir / 'plots'}")
    return out


COMMANDS = {"train": train, "sample": sample, "classify": classify, "evaluate": evaluate}
