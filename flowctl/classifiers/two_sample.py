"""The two-sample classifier: how well can an MLP tell sample 0 from sample 1?

Used as the CaloFlow / CaloChallenge AUC metric (reference/caloflow.md §2.2–2.3) and for
classifier reweighting (DCTR, arXiv:1907.08209): with ``D`` the calibrated probability of
label 1, ``w = D / (1 - D)`` estimates p1(x)/p0(x) (:func:`~.weights.density_ratio`).

Recipe (CaloChallenge ``evaluate.py`` DNN): MLP with LeakyReLU hidden layers and a logit
output, BCE loss, Adam; each class is split into train / val / test; the epoch with the
lowest **val** loss is kept (:func:`~.fit.fit_classifier`, ``top_k=1``, early stopping after
``patience`` epochs); probabilities are calibrated by isotonic regression fitted on the val
split; AUC (± bootstrap) and JSD are computed on the test split with
:mod:`flowctl.metrics.roc`.

Inputs are float arrays ``[N, F]``; nothing here knows about calorimeters.

>>> res = train_classifier(x0, x1, ClassifierConfig(epochs=20))     # doctest: +SKIP
>>> res.auc, res.auc_err, res.jsd                                   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from flowctl.metrics.roc import auc, bootstrap_auc, jsd_from_bce

from .calibration import IsotonicCalibration
from .fit import fit_classifier
from .mlp import build_mlp, predict_proba

__all__ = [
    "ClassifierConfig",
    "ClassifierPredictor",
    "ClassifierResult",
    "classifier_state",
    "config_dict",
    "train_classifier",
]


@dataclass
class ClassifierConfig:
    """Settings of :func:`train_classifier` (defaults: CaloFlow's DNN, reference §2.3)."""

    hidden: Sequence[int] = (512, 512, 512)
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 1000
    epochs: int = 50
    patience: int | None = 10       # stop after this many epochs without val improvement
    split: Sequence[float] = (0.6, 0.2, 0.2)  # train / val / test, per class
    standardize: bool = True        # z-score features with train-split statistics
    calibrate: bool = True          # isotonic regression on the val split
    bootstrap: int = 200            # resamples of the test split for the AUC uncertainty
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ClassifierConfig:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown classifier key(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class ClassifierResult:
    """What :func:`train_classifier` found. Probabilities are of label 1."""

    auc: float
    auc_err: float
    jsd: float                      # (ln 2 - BCE) / ln 2 on the calibrated test predictions
    accuracy: float
    best_epoch: int
    epochs: int
    wall_s: float
    test_labels: np.ndarray
    test_probs: np.ndarray          # calibrated (if enabled) P(label 1) on the test split
    history: list[dict[str, float]] = field(default_factory=list)
    model: nn.Module | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    calibration: IsotonicCalibration | None = None
    splits: tuple[list[np.ndarray], list[np.ndarray]] | None = None  # (s0, s1) row indices
    test_weights: np.ndarray | None = None  # sample weights of the test split (if given)

    def summary(self) -> dict[str, Any]:
        return {"auc": self.auc, "auc_err": self.auc_err, "jsd": self.jsd,
                "accuracy": self.accuracy, "best_epoch": self.best_epoch,
                "epochs": self.epochs, "wall_s": round(self.wall_s, 2),
                "n_test": len(self.test_labels)}

    def predict(self, x: np.ndarray, batch: int = 20000) -> np.ndarray:
        """Calibrated P(label 1 | x) ``[N]`` for new data ``x [N, F]``."""
        assert self.model is not None
        p = predict_proba([self.model], _scale(np.asarray(x, np.float64), self.mean,
                                               self.std), batch)
        return self.calibration(p) if self.calibration is not None else p


def _scale(x: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
    return x if mean is None or std is None else (x - mean) / std


def _split(n: int, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    idx = rng.permutation(n)
    edges = np.round(np.cumsum([0.0, *fractions]) / sum(fractions) * n).astype(int)
    return [idx[a:b] for a, b in itertools.pairwise(edges)]


def train_classifier(x0: np.ndarray, x1: np.ndarray, cfg: ClassifierConfig | None = None,
                     log: bool = False, w0: np.ndarray | None = None,
                     w1: np.ndarray | None = None) -> ClassifierResult:
    """Train an MLP to separate ``x0 [N0, F]`` (label 0) from ``x1 [N1, F]`` (label 1).

    Each sample is split ``cfg.split`` (train/val/test); the epoch with the lowest val BCE is
    kept; the AUC (± bootstrap std), JSD and accuracy are computed on the test split.
    Optional per-event weights ``w0 [N0]``, ``w1 [N1]`` (e.g. DCTR weights of a reweighted
    sample) weigh the loss, the calibration and the test scores; each class's weights are
    scaled to mean 1. Label 1's loss weight is multiplied by (total label-0 / total label-1
    training weight), so samples of different sizes count equally.
    """
    cfg = cfg or ClassifierConfig()
    x0, x1 = np.asarray(x0), np.asarray(x1)
    if x0.ndim != 2 or x1.ndim != 2 or x0.shape[1] != x1.shape[1]:
        raise ValueError(f"samples must be [N, F] with the same F, got {x0.shape} and {x1.shape}")
    if len(cfg.split) != 3 or min(cfg.split) <= 0:
        raise ValueError(f"split must be three positive fractions, got {list(cfg.split)}")
    for name, x in (("sample 0", x0), ("sample 1", x1)):
        if len(x) < 10:
            raise ValueError(f"{name} has {len(x)} rows; the classifier needs at least 10")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} has {int((~np.isfinite(x)).sum())} non-finite values")
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    s0, s1 = _split(len(x0), cfg.split, rng), _split(len(x1), cfg.split, rng)
    weighted = w0 is not None or w1 is not None
    ws = []
    for name, w, x in (("w0", w0, x0), ("w1", w1, x1)):
        w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
        if w.shape != (len(x),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"{name} must be {len(x)} finite non-negative weights")
        ws.append(w / w.mean())
    parts = []
    for a, b in zip(s0, s1):
        x = np.concatenate([x0[a], x1[b]]).astype(np.float64)
        y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
        parts.append((x, y, np.concatenate([ws[0][a], ws[1][b]])))
    (xtr, ytr, wtr), (xva, yva, wva), (xte, yte, wte) = parts
    mean = std = None
    if cfg.standardize:
        mean = xtr.mean(0)
        std = xtr.std(0)
        std = np.where(std > 1e-12, std, 1.0)
    xtr, xva, xte = (_scale(v, mean, std) for v in (xtr, xva, xte))
    # balance the classes in the loss when the samples differ in size
    pos_w = float(wtr[ytr == 0].sum()) / max(float(wtr[ytr == 1].sum()), 1e-12)

    dtype = getattr(torch, cfg.dtype)
    dev = torch.device(cfg.device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=dev)

    def show(row: dict[str, float]) -> None:
        print(f"classifier epoch {row['epoch']}: train {row['train_loss']:.4f} "
              f"val {row['val_loss']:.4f}")

    fit = fit_classifier(
        lambda: build_mlp(x0.shape[1], cfg.hidden, "leaky_relu", cfg.dropout),
        t(xtr), t(ytr), t(wtr * np.where(ytr == 1, pos_w, 1.0)),
        t(xva), t(yva), t(wva * np.where(yva == 1, pos_w, 1.0)),
        lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs,
        weight_decay=cfg.weight_decay, top_k=1, patience=cfg.patience, min_delta=1e-7,
        seed=cfg.seed, progress=show if log else None)
    model = build_mlp(x0.shape[1], cfg.hidden, "leaky_relu", cfg.dropout).to(dev, dtype)
    model.load_state_dict(fit.states[0])
    pv, pt = predict_proba([model], xva), predict_proba([model], xte)
    calib = (IsotonicCalibration(pv, yva, weights=wva if weighted else None)
             if cfg.calibrate else None)
    pt_cal = calib(pt) if calib is not None else pt
    wtest = wte if weighted else None
    a = auc(yte, pt, wtest)  # ranks of the raw scores (calibration only adds ties)
    acc = float(np.average((pt_cal > 0.5) == yte, weights=wtest))
    return ClassifierResult(
        auc=a, auc_err=bootstrap_auc(yte, pt, cfg.bootstrap, cfg.seed, wtest),
        jsd=jsd_from_bce(yte, pt_cal, weights=wtest), accuracy=acc,
        best_epoch=fit.best_epoch, epochs=fit.epochs_run, wall_s=time.perf_counter() - t0,
        test_labels=yte, test_probs=pt_cal, history=fit.history, model=model, mean=mean,
        std=std, calibration=calib, splits=(s0, s1), test_weights=wtest)


def config_dict(cfg: ClassifierConfig) -> dict[str, Any]:
    """Plain dict of a config (for metrics.json)."""
    d = asdict(cfg)
    d["hidden"] = list(d["hidden"])
    d["split"] = list(d["split"])
    return d


# --------------------------------------------------------------------------- save / load


def classifier_state(res: ClassifierResult, cfg: ClassifierConfig) -> dict[str, Any]:
    """Everything needed to predict again (weights, scaling, calibration knots, config), as a
    dict of tensors and plain values (``torch.load(weights_only=True)`` reads it back)."""
    assert res.model is not None
    return {"model": {k: v.detach().cpu() for k, v in res.model.state_dict().items()},
            "config": config_dict(cfg),
            "n_features": int(next(res.model.parameters()).shape[1]),
            "mean": _tensor(res.mean), "std": _tensor(res.std),
            "calibration": None if res.calibration is None else
            {"x": _tensor(res.calibration.x), "y": _tensor(res.calibration.y)}}


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.array(a, dtype=np.float64))


def _array(t: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    if t is None:
        return None
    return t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


@dataclass
class ClassifierPredictor:
    """A trained classifier reloaded from :func:`classifier_state`."""

    model: nn.Module
    mean: np.ndarray | None
    std: np.ndarray | None
    calibration: IsotonicCalibration | None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClassifierPredictor:
        c = state["config"]
        model = build_mlp(int(state["n_features"]), c["hidden"], "leaky_relu",
                          float(c.get("dropout", 0.0)))
        model.to(getattr(torch, c.get("dtype", "float32")))
        model.load_state_dict(state["model"])
        model.eval()
        cal = state.get("calibration")
        calib = None if cal is None else IsotonicCalibration.from_knots(_array(cal["x"]),
                                                                         _array(cal["y"]))
        return cls(model, _array(state.get("mean")), _array(state.get("std")), calib)

    def predict(self, x: np.ndarray, batch: int = 20000) -> np.ndarray:
        """Calibrated P(label 1 | x) ``[N]`` for ``x [N, F]``."""
        p = predict_proba([self.model], _scale(np.asarray(x, np.float64), self.mean, self.std),
                          batch)
        return self.calibration(p) if self.calibration is not None else p
