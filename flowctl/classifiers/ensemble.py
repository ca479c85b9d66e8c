"""Epoch- and run-ensembled weighted classifier (CATHODE's recipe; also CWoLa hunting, the
idealized anomaly detector, the supervised reference and the Gaia stream search).

Recipe (CATHODE, arXiv:2109.00546; reference/anomaly.md §2.4):

* MLP ``layers=(64, 64, 64)`` with ReLU and one output; the probability is
  ``sigmoid(logit)`` and the loss the per-event weighted binary cross-entropy (from the
  logit); Adam (lr 1e-3), batch 128, 100 epochs, no early stopping. The loop is
  :func:`~.fit.fit_classifier`, shared with the two-sample classifier.
* **Class weights** (``class_weights=True``, sklearn's ``"balanced"``,
  :func:`~.weights.balanced_weights`): each class gets the weight ``W / (2 W_c)``, where
  ``W_c`` is the summed per-event weight of class ``c`` and ``W`` the total. Per-event
  weights (``w_train``) multiply the class weights. The validation loss is weighted the same
  way, with the validation set's own class sums.
* **Epoch ensembling**: the ``top_k`` epochs with the lowest validation BCE are kept (in
  memory) and the prediction is the mean of their sigmoid outputs (CATHODE
  ``minimum_val_loss_model_evaluation``, ``n_epochs=10``). ``n_runs`` independent trainings
  (different seeds) are averaged.
* **Standardization**: inputs are z-scored with the mean and standard deviation of **all
  training rows** (both labels, unweighted); zero-spread features are left unscaled.

Labels: 1 = the "signal-enriched" sample, 0 = the reference. A higher score means more like
label 1.

>>> clf = train_weak_classifier(x_tr, y_tr, x_va, y_va, WeakClassifierConfig(epochs=20))  # doctest: +SKIP
>>> scores = clf.predict(x_test)                                                       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .fit import fit_classifier
from .mlp import build_mlp, predict_proba, standardizer
from .weights import balanced_weights

__all__ = [
    "STATE_FORMAT",
    "WeakClassifier",
    "WeakClassifierConfig",
    "train_weak_classifier",
]

#: Version of the dict written by :meth:`WeakClassifier.state`.
STATE_FORMAT = 1

_EVAL_BATCH = 65536


@dataclass
class WeakClassifierConfig:
    """Settings of :func:`train_weak_classifier` (defaults: CATHODE's ``classifier.yml``)."""

    layers: Sequence[int] = (64, 64, 64)   # hidden widths, ReLU after each
    lr: float = 1e-3                       # Adam learning rate
    weight_decay: float = 0.0              # Adam (L2) weight decay
    batch_size: int = 128
    epochs: int = 100
    top_k: int = 10                        # epochs with the lowest val loss, averaged
    n_runs: int = 1                        # independent trainings, averaged
    class_weights: bool = True             # "balanced": both classes weigh equally
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.layers = tuple(int(h) for h in self.layers)
        for name in ("batch_size", "epochs", "top_k", "n_runs"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        if any(h < 1 for h in self.layers):
            raise ValueError(f"layers must be positive widths, got {list(self.layers)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, "
                             f"{self.weight_decay}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> WeakClassifierConfig:
        """Config from a plain dict (e.g. a Hydra group); unknown keys raise ``ValueError``."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown weak-classifier key(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, numbers, strings) for metrics.json and checkpoints."""
        d = dataclasses.asdict(self)
        d["layers"] = list(d["layers"])
        return d


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [N, F], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has {int((~np.isfinite(x)).sum())} NaN/inf values")
    return x


def _labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} labels for {n} rows")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must be 0/1 labels")
    y = y.astype(np.float64)
    if y.min() == y.max():
        raise ValueError(f"{name} needs both labels 0 and 1")
    return y


def _event_weights(w: np.ndarray | None, y: np.ndarray, balance: bool,
                   name: str) -> np.ndarray:
    if w is not None:
        w = np.asarray(w, np.float64).reshape(-1)
        if w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{name} must be {len(y)} finite non-negative weights")
    if balance:
        return balanced_weights(y, w)
    return np.ones(len(y)) if w is None else w


@dataclass(eq=False)
class WeakClassifier:
    """A trained (ensembled) classifier: ``predict`` averages the sigmoid outputs of the
    kept epochs of each run, then over runs.

    ``states[r]`` holds the state_dicts of run ``r``'s kept epochs (``epochs[r]``, 1-based,
    sorted by validation loss); ``history`` one row per run and epoch
    (``run, epoch, train_loss, val_loss, wall_s``); ``mean``/``std`` ``[F]`` the input
    standardization."""

    config: WeakClassifierConfig
    mean: np.ndarray
    std: np.ndarray
    states: list[list[dict[str, torch.Tensor]]]
    epochs: list[list[int]]
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    _models: list[list[nn.Module]] | None = field(default=None, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def _built(self) -> list[list[nn.Module]]:
        if self._models is None:
            dev = torch.device(self.config.device)
            models = []
            for run in self.states:
                ms = []
                for sd in run:
                    m = build_mlp(self.n_features, self.config.layers, "relu")
                    m.load_state_dict(sd)
                    ms.append(m.to(dev).eval())
                models.append(ms)
            self._models = models
        return self._models

    @torch.no_grad()
    def predict_runs(self, x: np.ndarray, batch: int = _EVAL_BATCH) -> np.ndarray:
        """Per-run scores ``[n_runs, N]`` (mean over each run's kept epochs) for
        ``x [N, F]``."""
        x = _as_2d(x, "x")
        if x.shape[1] != self.n_features:
            raise ValueError(f"x has {x.shape[1]} features, the classifier {self.n_features}")
        xs = (x - self.mean) / self.std
        return np.stack([predict_proba(ms, xs, batch) for ms in self._built()])

    def predict(self, x: np.ndarray, batch: int = _EVAL_BATCH) -> np.ndarray:
        """Score ``[N]`` float64 in (0, 1) for ``x [N, F]``: the mean over runs of the mean
        over kept epochs of ``sigmoid(logit)``. (Clipped into the open interval; only
        logits beyond ±37 would otherwise round to 0 or 1.)"""
        p = self.predict_runs(x, batch).mean(0)
        return np.clip(p, np.finfo(np.float64).tiny, np.nextafter(1.0, 0.0))

    def state(self) -> dict[str, Any]:
        """Everything needed to predict again, as a plain dict of tensors, lists, numbers
        and strings (loadable with ``torch.load(weights_only=True)``)."""
        return {"format": STATE_FORMAT, "kind": "weak_classifier",
                "config": self.config.to_dict(),
                "mean": torch.as_tensor(self.mean, dtype=torch.float64),
                "std": torch.as_tensor(self.std, dtype=torch.float64),
                "states": self.states, "epochs": self.epochs,
                "history": self.history, "wall_s": float(self.wall_s)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WeakClassifier:
        """Inverse of :meth:`state`."""
        if state.get("kind") != "weak_classifier":
            raise ValueError("not a weak-classifier state (kind != 'weak_classifier')")
        if int(state.get("format", -1)) > STATE_FORMAT:
            raise ValueError(f"weak-classifier state format {state['format']} is newer than "
                             f"this flowctl understands ({STATE_FORMAT})")
        return cls(config=WeakClassifierConfig.from_dict(state["config"]),
                   mean=np.asarray(state["mean"], np.float64),
                   std=np.asarray(state["std"], np.float64),
                   states=[list(r) for r in state["states"]],
                   epochs=[[int(e) for e in r] for r in state["epochs"]],
                   history=list(state.get("history", [])),
                   wall_s=float(state.get("wall_s", 0.0)))

    def save(self, path: str | Path) -> Path:
        """``torch.save`` of :meth:`state` to ``path`` (folder created; temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> WeakClassifier:
        """A classifier written by :meth:`save`."""
        return cls.from_state(torch.load(Path(path), map_location="cpu", weights_only=True))


# --------------------------------------------------------------------------- training


def _run_seed(seed: int, run: int) -> int:
    return int(seed) * 1009 + run


def train_weak_classifier(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                          y_val: np.ndarray, cfg: WeakClassifierConfig | None = None,
                          w_train: np.ndarray | None = None, w_val: np.ndarray | None = None,
                          progress: Callable[[dict[str, float]], None] | None = None
                          ) -> WeakClassifier:
    """Train ``cfg.n_runs`` classifiers of ``x_train [N, F]`` with labels ``y_train [N]``
    (0/1), keeping the ``cfg.top_k`` epochs of lowest validation BCE on
    ``(x_val [M, F], y_val [M])``.

    ``w_train [N]`` / ``w_val [M]`` are optional per-event weights (non-negative) that
    multiply the class weights. ``progress`` is called after every epoch with the history row
    ``{"run", "epoch", "train_loss", "val_loss", "wall_s"}``. Deterministic for a given
    ``cfg.seed`` on CPU (run ``r`` uses seed ``1009·seed + r``; the global torch RNG is not
    touched).
    """
    cfg = cfg or WeakClassifierConfig()
    t0 = time.perf_counter()
    xtr, xva = _as_2d(x_train, "x_train"), _as_2d(x_val, "x_val")
    if xtr.shape[1] != xva.shape[1]:
        raise ValueError(f"x_train has {xtr.shape[1]} features, x_val {xva.shape[1]}")
    ytr, yva = _labels(y_train, len(xtr), "y_train"), _labels(y_val, len(xva), "y_val")
    wtr = _event_weights(w_train, ytr, cfg.class_weights, "w_train")
    wva = _event_weights(w_val, yva, cfg.class_weights, "w_val")
    mean, std = standardizer(xtr)
    dev = torch.device(cfg.device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=dev)

    xt, yt, wt = t((xtr - mean) / std), t(ytr), t(wtr)
    xv, yv, wv = t((xva - mean) / std), t(yva), t(wva)
    history: list[dict[str, float]] = []
    states, epochs = [], []
    for run in range(cfg.n_runs):
        cb = None
        if progress is not None:
            def cb(row: dict[str, float], _run: int = run) -> None:
                progress({"run": _run, **row})
        fit = fit_classifier(lambda: build_mlp(xt.shape[1], cfg.layers, "relu"),
                             xt, yt, wt, xv, yv, wv, lr=cfg.lr, batch_size=cfg.batch_size,
                             epochs=cfg.epochs, weight_decay=cfg.weight_decay, top_k=cfg.top_k,
                             seed=_run_seed(cfg.seed, run), progress=cb)
        history += [{"run": run, **row} for row in fit.history]
        states.append(fit.states)
        epochs.append(fit.epochs)
    return WeakClassifier(config=cfg, mean=mean, std=std, states=states, epochs=epochs,
                          history=history, wall_s=time.perf_counter() - t0)


