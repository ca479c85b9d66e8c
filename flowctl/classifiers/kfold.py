"""k-fold out-of-fold scoring: every row is scored by a classifier that never saw it
(CWoLa hunting on data alone, the Gaia stream search)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .ensemble import WeakClassifier, WeakClassifierConfig, _as_2d, _labels, train_weak_classifier

__all__ = ["KFoldResult", "fold_of_rows", "kfold_fit_score", "kfold_indices", "kfold_scores"]


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
