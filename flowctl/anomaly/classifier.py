"""The weakly supervised classifier of CATHODE, CWoLa hunting and the idealized AD.

Recipe (CATHODE, arXiv:2109.00546; reference/anomaly.md §2.4):

* MLP ``layers=(64, 64, 64)`` with ReLU and one output; the probability is
  ``sigmoid(logit)`` and the loss the per-event weighted binary cross-entropy (computed from
  the logit, ``BCEWithLogits``, which is the same function but numerically stable); Adam
  (lr 1e-3), batch 128, 100 epochs, no early stopping.
* **Class weights** (``class_weights=True``, sklearn's ``"balanced"``): each class gets the
  weight ``W / (2 W_c)``, where ``W_c`` is the summed per-event weight of class ``c``
  (the row count without per-event weights) and ``W`` the total, so both classes carry the
  same total weight. Per-event weights (``w_train``, e.g. :func:`cwola_weights`) multiply
  the class weights; weights that already balance the classes are left unchanged. The
  validation loss is weighted the same way, with the validation set's own class sums.
* **Epoch ensembling**: after every epoch the validation BCE is computed; the state of the
  ``top_k`` epochs with the lowest validation loss is kept (in memory) and the prediction is
  the mean of their sigmoid outputs (CATHODE ``minimum_val_loss_model_evaluation``,
  ``n_epochs=10``). ``n_runs`` independent trainings (different seeds) are averaged.
* **Standardization**: inputs are z-scored with the mean and standard deviation of **all
  training rows** (both labels, unweighted). CATHODE standardizes with the statistics of the
  SR data (label 1); its samples (label 0) follow the background density of those data, so
  the pooled statistics differ little there, and pooled statistics stay sensible when label 1
  is a small or pure-signal class (supervised, idealized AD with few data). Features with
  zero spread are left unscaled.

Labels: 1 = the "signal-enriched" sample (SR data for CATHODE / IAD / CWoLa, true signal for
the supervised classifier), 0 = the reference (flow samples, simulated background, sidebands,
true background). A higher score means more like label 1.

>>> clf = train_weak_classifier(x_tr, y_tr, x_va, y_va, WeakClassifierConfig(epochs=20))  # doctest: +SKIP
>>> scores = clf.predict(x_test)                                                       # doctest: +SKIP
>>> clf.save("clf.pt"); scores2 = WeakClassifier.load("clf.pt").predict(x_test)       # doctest: +SKIP
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

__all__ = [
    "KFoldResult",
    "WeakClassifier",
    "WeakClassifierConfig",
    "balanced_weights",
    "cwola_weights",
    "fold_of_rows",
    "kfold_fit_score",
    "kfold_indices",
    "kfold_scores",
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


# --------------------------------------------------------------------------- weights


def balanced_weights(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Per-event weights ``[N]`` with class weights ``W / (2 W_c)`` times ``w`` (default 1):
    both classes then sum to ``W / 2``. Labels ``y [N]`` are 0/1; both must be present."""
    y = np.asarray(y).reshape(-1).astype(bool)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64).reshape(-1)
    w1, w0 = float(w[y].sum()), float(w[~y].sum())
    if w1 <= 0 or w0 <= 0:
        raise ValueError("both classes need positive total weight for class balancing")
    tot = w1 + w0
    return w * np.where(y, tot / (2 * w1), tot / (2 * w0))


def cwola_weights(mjj: np.ndarray, is_sr: np.ndarray, sr_center: float = 3.5,
                  balance_sidebands: bool = True) -> np.ndarray:
    """CWoLa-hunting weights ``[N]`` (CATHODE ``classifier_training_utils``, ``CWoLa=True``;
    reference/anomaly.md §5.1).

    SR events (``is_sr``, label 1) get ``N / (2 N_SR)``; the SB (label 0) gets ``N / 2`` in
    total, split equally between the lower (``mjj < sr_center``) and upper sideband so that
    both count the same however many events each holds. The weights have mean 1 and
    SR total = SB total = N/2, lower SB total = upper SB total = N/4. With
    ``balance_sidebands=False`` every SB event gets ``N / (2 N_SB)``. ``mjj`` in TeV (any
    unit consistent with ``sr_center``).

    Use them as ``w_train`` / ``w_val`` of :func:`train_weak_classifier` with ``y = is_sr``
    (computed separately for the train and the val rows); the balanced class weights leave
    them unchanged, since SR and SB already carry equal totals.
    """
    m = np.asarray(mjj, np.float64).reshape(-1)
    sr = np.asarray(is_sr).reshape(-1).astype(bool)
    if m.shape != sr.shape:
        raise ValueError(f"mjj {m.shape} and is_sr {sr.shape} differ in length")
    n, n_sr = len(m), int(sr.sum())
    if n_sr == 0 or n_sr == n:
        raise ValueError(f"CWoLa needs SR and SB events; got {n_sr} SR of {n}")
    w = np.where(sr, n / (2.0 * n_sr), n / (2.0 * (n - n_sr)))
    if balance_sidebands:
        low, high = ~sr & (m < sr_center), ~sr & (m >= sr_center)
        n_lo, n_hi = int(low.sum()), int(high.sum())
        if n_lo == 0 or n_hi == 0:
            raise ValueError(f"both sidebands need events to balance them; lower {n_lo}, "
                             f"upper {n_hi} (sr_center={sr_center}); pass "
                             "balance_sidebands=False to weigh the SB as one")
        w = np.where(low, n / (4.0 * n_lo), np.where(high, n / (4.0 * n_hi), w))
    return w


# --------------------------------------------------------------------------- model


def _relu_mlp(n_in: int, layers: Sequence[int]) -> nn.Sequential:
    """``Linear → ReLU`` per hidden width, then ``Linear → 1`` (a logit)."""
    mods: list[nn.Module] = []
    for h in layers:
        mods += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    mods.append(nn.Linear(n_in, 1))
    return nn.Sequential(*mods)


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


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
                    m = _relu_mlp(self.n_features, self.config.layers)
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
        dev = torch.device(self.config.device)
        out = np.zeros((len(self.states), len(x)))
        for r, ms in enumerate(self._built()):
            for i in range(0, len(xs), batch):
                xb = torch.as_tensor(xs[i:i + batch], dtype=torch.float32, device=dev)
                p = sum(torch.sigmoid(m(xb).squeeze(-1).double()) for m in ms) / len(ms)
                out[r, i:i + batch] = p.cpu().numpy()
        return out

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


def _train_one_run(xt: torch.Tensor, yt: torch.Tensor, wt: torch.Tensor, xv: torch.Tensor,
                   yv: torch.Tensor, wv: torch.Tensor, cfg: WeakClassifierConfig, run: int,
                   progress: Callable[[dict[str, float]], None] | None,
                   history: list[dict[str, float]]
                   ) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """One training; returns the kept states and their (1-based) epochs, best first."""
    dev = xt.device
    seed = _run_seed(cfg.seed, run)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _relu_mlp(xt.shape[1], cfg.layers)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lossf = nn.BCEWithLogitsLoss(reduction="none")
    gen = torch.Generator().manual_seed(seed)
    kept: list[tuple[float, int, dict[str, torch.Tensor]]] = []   # (val loss, epoch, state)
    n, t0 = len(xt), time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        tot = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = (lossf(model(xt[idx]).squeeze(-1), yt[idx]) * wt[idx]).mean()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            vsum = sum(float((lossf(model(xv[i:i + _EVAL_BATCH]).squeeze(-1),
                                    yv[i:i + _EVAL_BATCH]) * wv[i:i + _EVAL_BATCH]).sum())
                       for i in range(0, len(xv), _EVAL_BATCH))
        row = {"run": run, "epoch": epoch, "train_loss": tot / n, "val_loss": vsum / len(xv),
               "wall_s": time.perf_counter() - t0}
        history.append(row)
        if progress is not None:
            progress(row)
        vl = row["val_loss"]
        if len(kept) < cfg.top_k or vl < kept[-1][0]:
            kept.append((vl, epoch, _state_copy(model)))
            kept.sort(key=lambda t: (t[0], t[1]))
            del kept[cfg.top_k:]
    return [s for _, _, s in kept], [e for _, e, _ in kept]


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
    mean = xtr.mean(0)
    std = xtr.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    dev = torch.device(cfg.device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=dev)

    xt, yt, wt = t((xtr - mean) / std), t(ytr), t(wtr)
    xv, yv, wv = t((xva - mean) / std), t(yva), t(wva)
    history: list[dict[str, float]] = []
    states, epochs = [], []
    for run in range(cfg.n_runs):
        s, e = _train_one_run(xt, yt, wt, xv, yv, wv, cfg, run, progress, history)
        states.append(s)
        epochs.append(e)
    return WeakClassifier(config=cfg, mean=mean, std=std, states=states, epochs=epochs,
                          history=history, wall_s=time.perf_counter() - t0)


# --------------------------------------------------------------------------- k-fold


def kfold_indices(y: np.ndarray, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint, label-stratified folds (sorted row indices) covering ``range(N)``."""
    y = np.asarray(y).reshape(-1)
    if k < 3:
        raise ValueError(f"k-fold scoring needs k >= 3 (train, val and test folds), got {k}")
    rng = np.random.default_rng(seed)
    folds: list[list[np.ndarray]] = [[] for _ in range(k)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        for f, part in enumerate(np.array_split(idx, k)):
            folds[f].append(part)
    return [np.sort(np.concatenate(f)) for f in folds]


@dataclass(eq=False)
class KFoldResult:
    """Out-of-fold scores of :func:`kfold_fit_score`.

    ``scores [N]``: the score of row ``j`` comes from ``classifiers[fold[j]]``, which was
    trained and validated on the other folds only; ``fold [N]`` (int) is the row's test fold;
    ``val_fold[i]`` is the fold that validated classifier ``i`` (epoch selection)."""

    scores: np.ndarray
    fold: np.ndarray
    val_fold: list[int]
    classifiers: list[WeakClassifier]

    def predict_unseen(self, x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``[M]`` of rows no fold saw (e.g. sideband events for a sculpting check),
        each from one fold classifier dealt at random (the fold is returned ``[M]``), so the
        scores are distributed like the out-of-fold ones: a mean over folds would shrink
        their tails and pass fewer events through a cut set on single-model scores."""
        x = np.asarray(x, np.float64)
        fold = np.random.default_rng(seed).permutation(len(x)) % len(self.classifiers)
        out = np.zeros(len(x))
        for i, c in enumerate(self.classifiers):
            if (fold == i).any():
                out[fold == i] = c.predict(x[fold == i])
        return out, fold


def fold_of_rows(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``[N]`` int: the test fold of each row, from :func:`kfold_indices` (stratified by the
    classifier's label ``y``, never by truth)."""
    fold = np.empty(len(np.asarray(y).reshape(-1)), np.int64)
    for i, f in enumerate(kfold_indices(y, k, seed)):
        fold[f] = i
    return fold


def kfold_fit_score(x: np.ndarray, y: np.ndarray, cfg: WeakClassifierConfig | None = None,
                    k: int = 5, w: np.ndarray | None = None,
                    progress: Callable[[dict[str, float]], None] | None = None,
                    trainer: Callable[..., WeakClassifier] | None = None) -> KFoldResult:
    """Out-of-fold scores of every row of ``x [N, F]`` (labels ``y [N]``, 0/1).

    Rows are split into ``k`` stratified folds (:func:`kfold_indices` with ``cfg.seed``);
    for test fold ``i`` the classifier trains on the other folds except fold ``(i+1) % k``,
    which is its validation set (epoch selection: each fold keeps its own ``top_k`` epoch
    ensemble and ``n_runs``). ``w [N]`` are optional per-event weights (e.g.
    :func:`cwola_weights`). Fold ``i`` trains with seed ``cfg.seed + 7919·i``; ``progress``
    rows get an extra ``"fold"`` key. ``trainer`` replaces :func:`train_weak_classifier`
    (same signature; tests use it to watch which rows each fold sees).
    """
    cfg = cfg or WeakClassifierConfig()
    trainer = trainer or train_weak_classifier
    x = _as_2d(x, "x")
    y = _labels(y, len(x), "y")
    w = None if w is None else np.asarray(w, np.float64).reshape(-1)
    fold = fold_of_rows(y, k, cfg.seed)
    scores = np.full(len(x), np.nan)
    classifiers: list[WeakClassifier] = []
    val_fold: list[int] = []
    for i in range(k):
        v = (i + 1) % k
        test, val = np.flatnonzero(fold == i), np.flatnonzero(fold == v)
        train = np.flatnonzero((fold != i) & (fold != v))
        cb = None
        if progress is not None:
            def cb(row: dict[str, float], _i: int = i) -> None:
                progress({**row, "fold": _i})
        clf = trainer(
            x[train], y[train], x[val], y[val], dataclasses.replace(cfg, seed=cfg.seed + 7919 * i),
            None if w is None else w[train], None if w is None else w[val], progress=cb)
        scores[test] = clf.predict(x[test])
        classifiers.append(clf)
        val_fold.append(v)
    return KFoldResult(scores=scores, fold=fold, val_fold=val_fold, classifiers=classifiers)


def kfold_scores(x: np.ndarray, y: np.ndarray, cfg: WeakClassifierConfig | None = None,
                 k: int = 5, w: np.ndarray | None = None,
                 progress: Callable[[dict[str, float]], None] | None = None,
                 classifiers: list[WeakClassifier] | None = None) -> np.ndarray:
    """Out-of-fold scores ``[N]`` of :func:`kfold_fit_score`: every event of ``x [N, F]`` is
    scored by a classifier that never saw it. Pass a list as ``classifiers`` to receive the
    ``k`` trained classifiers (in fold order)."""
    res = kfold_fit_score(x, y, cfg, k, w, progress)
    if classifiers is not None:
        classifiers.extend(res.classifiers)
    return res.scores
