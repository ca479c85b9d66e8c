"""A generic two-sample classifier: how well can an MLP tell sample 0 from sample 1?

Used as the CaloFlow / CaloChallenge AUC metric (reference/caloflow.md §2.2–2.3) and for
classifier reweighting (DCTR, arXiv:1907.08209): with ``D`` the calibrated probability of
label 1, ``w = D / (1 - D)`` estimates p1(x)/p0(x) (see :func:`density_ratio`).

Recipe (CaloChallenge ``evaluate.py`` DNN): MLP with LeakyReLU hidden layers and a logit
output, BCE loss, Adam; each class is split into train / val / test; the epoch with the
lowest **val** loss is kept; probabilities are calibrated by isotonic regression fitted on the
val split; AUC and JSD are computed on the test split, the AUC with a bootstrap uncertainty.

Nothing here knows about calorimeters: inputs are float arrays ``[N, F]``.

>>> res = train_classifier(x0, x1, ClassifierConfig(epochs=20))     # doctest: +SKIP
>>> res.auc, res.auc_err, res.jsd                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ClassifierConfig",
    "ClassifierPredictor",
    "ClassifierResult",
    "IsotonicCalibration",
    "auc",
    "bootstrap_auc",
    "classifier_state",
    "dctr_weights",
    "density_ratio",
    "jsd_from_bce",
    "roc_curve",
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

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch: int = 20000) -> np.ndarray:
        """Calibrated P(label 1 | x) ``[N]`` for new data ``x [N, F]``."""
        assert self.model is not None
        p = _predict(self.model, _scale(x, self.mean, self.std), batch)
        return self.calibration(p) if self.calibration is not None else p


# --------------------------------------------------------------------------- scores


def auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    With per-event ``weights [N]`` it is the weighted probability that a label-1 event
    scores above a label-0 one (ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    if weights is not None:
        return _weighted_auc(labels, np.asarray(scores, np.float64),
                             np.asarray(weights, np.float64))
    n1 = int(labels.sum())
    n0 = len(labels) - n1
    if n0 == 0 or n1 == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, np.float64))
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def _weighted_auc(labels: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    uniq, inv = np.unique(s, return_inverse=True)
    w1 = np.bincount(inv, weights=np.where(labels, w, 0.0), minlength=len(uniq))
    w0 = np.bincount(inv, weights=np.where(labels, 0.0, w), minlength=len(uniq))
    t0, t1 = w0.sum(), w1.sum()
    if t0 <= 0 or t1 <= 0:
        return float("nan")
    below = np.cumsum(w0) - w0  # label-0 weight strictly below each score
    return float((w1 * (below + 0.5 * w0)).sum() / (t0 * t1))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    # ties get the mean of their positions (1-based)
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mean_rank = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    return ranks


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, n: int = 200,
                  seed: int = 0, weights: np.ndarray | None = None) -> float:
    """Standard deviation of the AUC over ``n`` bootstrap resamples (0 if ``n`` < 2)."""
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    m = len(labels)
    vals = [auc(labels[i], scores[i], None if weights is None else weights[i])
            for i in (rng.integers(0, m, m) for _ in range(n))]
    return float(np.nanstd(vals, ddof=1))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates ``[M]`` over all thresholds (label 1 = positive)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    y = labels[order]
    tp = np.concatenate([[0], np.cumsum(y)])
    fp = np.concatenate([[0], np.cumsum(~y)])
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1)


def jsd_from_bce(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-6,
                 weights: np.ndarray | None = None) -> float:
    """Jensen-Shannon divergence estimate ``(ln 2 - BCE) / ln 2`` in [0, 1] (CaloChallenge)."""
    p = np.clip(probs, eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    bce = -np.average(y * np.log(p) + (1 - y) * np.log1p(-p), weights=weights)
    return float((math.log(2.0) - bce) / math.log(2.0))


def density_ratio(probs: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``w = D / (1 - D)`` with ``D = P(label 1)``: the likelihood ratio p1(x)/p0(x) for equal
    class sizes. Weighting sample 0 by ``w`` (or sample 1 by ``1/w``) makes it look like the
    other sample (DCTR)."""
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    return p / (1 - p)


def dctr_weights(probs: np.ndarray, clip: float | None = 10.0, normalize: bool = True,
                 eps: float = 1e-6) -> tuple[np.ndarray, float]:
    """DCTR weights (arXiv:1907.08209, 2009.03796) ``w = D/(1-D)`` ``[N]`` for the label-0
    sample, scaled to mean 1 (which removes the class-size prior of a calibrated D) and
    clipped at ``clip`` times the mean; returns ``(w, fraction of clipped weights)``."""
    w = density_ratio(probs, eps)
    frac = 0.0
    if not len(w):
        return w, frac
    if clip is None:
        return (w / w.mean() if normalize else w), frac
    if not normalize:
        return np.minimum(w, clip), float((w > clip).mean())
    if clip < 1:
        raise ValueError(f"clip must be >= 1 (the mean weight), got {clip}")
    # scale s with mean(min(s·w, clip)) = 1: the k largest clipped, the rest scaled
    r = np.sort(w)
    n = len(r)
    csum = np.concatenate([[0.0], np.cumsum(r)])
    ks = np.arange(n)
    scales = (n - ks * clip) / csum[n - ks]
    upper = np.concatenate([[np.inf], r[::-1][:n - 1]])  # r[n - k] (k >= 1)
    ok = (scales * r[n - ks - 1] <= clip) & (scales * upper >= clip)
    k = int(np.argmax(ok)) if ok.any() else n - 1
    w = np.minimum(scales[k] * w, clip)
    frac = k / n
    return w, frac


class IsotonicCalibration:
    """Monotone (non-decreasing) map from scores to probabilities by pool-adjacent-violators,
    clipped to [y_min, 1 - y_min]; evaluated by linear interpolation."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray, y_min: float = 1e-6,
                 weights: np.ndarray | None = None) -> None:
        order = np.argsort(scores, kind="mergesort")
        x = np.asarray(scores, np.float64)[order]
        y = np.asarray(labels, np.float64)[order]
        wy = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)[order]
        # PAV on blocks: value, weight, x-range
        vals: list[float] = []
        wts: list[float] = []
        xlo: list[float] = []
        xhi: list[float] = []
        for xi, yi, wi in zip(x, y, wy):
            vals.append(yi)
            wts.append(float(wi))
            xlo.append(xi)
            xhi.append(xi)
            while len(vals) > 1 and vals[-2] > vals[-1]:
                w = wts[-2] + wts[-1]
                v = ((vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w if w > 0
                     else 0.5 * (vals[-2] + vals[-1]))
                vals[-2:], wts[-2:] = [v], [w]
                xlo[-2:], xhi[-2:] = [xlo[-2]], [xhi[-1]]
        kx = np.array([c for lo, hi in zip(xlo, xhi) for c in (lo, hi)])
        ky = np.array([v for v in vals for _ in (0, 1)])
        self.x, self.y = kx, np.clip(ky, y_min, 1 - y_min)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(scores, self.x, self.y)

    @classmethod
    def from_knots(cls, x: np.ndarray, y: np.ndarray) -> IsotonicCalibration:
        """Rebuild a fitted calibration from its knots ``x, y [K]`` (see ``self.x, self.y``)."""
        obj = cls.__new__(cls)
        obj.x, obj.y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return obj


# --------------------------------------------------------------------------- the classifier


def _mlp(n_in: int, hidden: Sequence[int], dropout: float) -> nn.Module:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.LeakyReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = h
    layers.append(nn.Linear(n_in, 1))
    return nn.Sequential(*layers)


def _scale(x: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
    return x if mean is None or std is None else (x - mean) / std


@torch.no_grad()
def _predict(model: nn.Module, x: np.ndarray, batch: int = 20000) -> np.ndarray:
    model.eval()
    p = next(model.parameters())
    out = [torch.sigmoid(model(torch.as_tensor(x[i:i + batch], dtype=p.dtype,
                                               device=p.device))).squeeze(-1).double().cpu()
           for i in range(0, len(x), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0)


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
    scaled to mean 1.
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
    torch.manual_seed(cfg.seed)
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

    dtype = getattr(torch, cfg.dtype)
    dev = torch.device(cfg.device)
    model = _mlp(x0.shape[1], cfg.hidden, cfg.dropout).to(dev, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt = torch.as_tensor(xtr, dtype=dtype, device=dev)
    yt = torch.as_tensor(ytr, dtype=dtype, device=dev)
    # balance the classes in the loss when the samples differ in size
    pos_w = torch.tensor(float(wtr[ytr == 0].sum()) / max(float(wtr[ytr == 1].sum()), 1e-12),
                         dtype=dtype, device=dev)
    bce = nn.BCEWithLogitsLoss(pos_weight=pos_w, reduction="none")

    def lossf(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (bce(logits, y) * w).mean()

    wt = torch.as_tensor(wtr, dtype=dtype, device=dev)
    xv = torch.as_tensor(xva, dtype=dtype, device=dev)
    yv = torch.as_tensor(yva, dtype=dtype, device=dev)
    wv = torch.as_tensor(wva, dtype=dtype, device=dev)
    best, best_state, best_epoch, since = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    history: list[dict[str, float]] = []
    gen = torch.Generator().manual_seed(cfg.seed)
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen).to(dev)
        tot = 0.0
        for i in range(0, len(xt), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xt[idx]).squeeze(-1), yt[idx], wt[idx])
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            vl = float(sum(lossf(model(xv[i:i + 20000]).squeeze(-1), yv[i:i + 20000],
                                 wv[i:i + 20000])
                           * len(yv[i:i + 20000]) for i in range(0, len(xv), 20000)) / len(xv))
        history.append({"epoch": epoch, "train_loss": tot / len(xt), "val_loss": vl})
        if log:
            print(f"classifier epoch {epoch}: train {tot / len(xt):.4f} val {vl:.4f}")
        if vl < best - 1e-7:
            best, best_state, best_epoch, since = vl, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            since += 1
            if cfg.patience is not None and since >= cfg.patience:
                break
    model.load_state_dict(best_state)
    pv, pt = _predict(model, xva), _predict(model, xte)
    calib = (IsotonicCalibration(pv, yva, weights=wva if weighted else None)
             if cfg.calibrate else None)
    pt_cal = calib(pt) if calib is not None else pt
    wtest = wte if weighted else None
    a = auc(yte, pt, wtest)  # ranks of the raw scores (calibration only adds ties)
    acc = float(np.average((pt_cal > 0.5) == yte, weights=wtest))
    return ClassifierResult(
        auc=a, auc_err=bootstrap_auc(yte, pt, cfg.bootstrap, cfg.seed, wtest),
        jsd=jsd_from_bce(yte, pt_cal, weights=wtest), accuracy=acc,
        best_epoch=best_epoch, epochs=epoch, wall_s=time.perf_counter() - t0,
        test_labels=yte, test_probs=pt_cal, history=history, model=model, mean=mean,
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
        model = _mlp(int(state["n_features"]), c["hidden"], float(c.get("dropout", 0.0)))
        model.to(getattr(torch, c.get("dtype", "float32")))
        model.load_state_dict(state["model"])
        model.eval()
        cal = state.get("calibration")
        calib = None if cal is None else IsotonicCalibration.from_knots(_array(cal["x"]),
                                                                         _array(cal["y"]))
        return cls(model, _array(state.get("mean")), _array(state.get("std")), calib)

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch: int = 20000) -> np.ndarray:
        """Calibrated P(label 1 | x) ``[N]`` for ``x [N, F]``."""
        p = _predict(self.model, _scale(np.asarray(x, np.float64), self.mean, self.std), batch)
        return self.calibration(p) if self.calibration is not None else p
