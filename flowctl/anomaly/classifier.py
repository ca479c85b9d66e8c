"""The weakly supervised classifier of CATHODE, CWoLa hunting and the idealized AD.

The classifier itself lives in :mod:`flowctl.classifiers` (one trainer for the whole
project: :func:`~flowctl.classifiers.train_weak_classifier` is CATHODE's epoch- and
run-ensembled recipe, :func:`~flowctl.classifiers.kfold_fit_score` the out-of-fold scoring);
this module keeps the anomaly-detection names in one place and adds CWoLa hunting's
sideband weights (:func:`cwola_weights`).

Labels: 1 = the "signal-enriched" sample (SR data for CATHODE / IAD / CWoLa, true signal for
the supervised classifier), 0 = the reference (flow samples, simulated background, sidebands,
true background). A higher score means more like label 1.

>>> clf = train_weak_classifier(x_tr, y_tr, x_va, y_va, WeakClassifierConfig(epochs=20))  # doctest: +SKIP
>>> scores = clf.predict(x_test)                                                       # doctest: +SKIP
>>> clf.save("clf.pt"); scores2 = WeakClassifier.load("clf.pt").predict(x_test)       # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from flowctl.classifiers import (
    KFoldResult,
    WeakClassifier,
    WeakClassifierConfig,
    balanced_weights,
    fold_of_rows,
    kfold_fit_score,
    kfold_indices,
    kfold_scores,
    train_weak_classifier,
)
from flowctl.classifiers.ensemble import STATE_FORMAT

__all__ = [
    "STATE_FORMAT",
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
