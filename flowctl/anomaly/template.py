"""How good is CATHODE's background template? A classifier between true SR background and
the template samples (issue 20).

CATHODE's classifier separates SR data from background samples; whatever the samples get
wrong about the background, it learns too, and that dilutes the signal it can find. With
labelled simulation (the R&D file's truth labels or the extra QCD file) the template can be
checked directly: train a classifier between true SR background (label 1) and the samples
(label 0) and measure its AUC on held-out events. 0.5 means the samples cannot be told from
the background; the null spread of the AUC at ``n`` test events per class is
``sqrt((2n + 1) / (12 n^2))``. Per-feature AUCs (each feature used alone as a score) show
which marginal is off.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowctl.anomaly.classifier import WeakClassifierConfig, train_weak_classifier
from flowctl.metrics.roc import auc

__all__ = ["template_check"]


def _split3(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / val / test row indices (50 / 25 / 25 %) of ``range(n)``."""
    p = rng.permutation(n)
    a, b = n // 2, n // 2 + n // 4
    return p[:a], p[a:b], p[b:]


def template_check(truth: np.ndarray, samples: np.ndarray,
                   cfg: WeakClassifierConfig | None = None, max_events: int | None = 100_000,
                   seed: int = 0, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Classifier AUC between ``truth [N, F]`` (true SR background) and ``samples [M, F]``
    (the template), on held-out events.

    Both sets are cut to the same size ``n = min(N, M, max_events)``; each is split 50 / 25 /
    25 % into train, validation (epoch selection) and test. Returns ``{"auc", "auc_null_sd",
    "n_per_class", "n_test_per_class", "feature_auc": {name: AUC}, "epochs", "wall_s"}``;
    ``auc`` > 0.5 means the classifier finds true background more "background-like" than
    the samples in some region (a mismodelled template)."""
    t0 = time.perf_counter()
    truth = np.asarray(truth, np.float64)
    samples = np.asarray(samples, np.float64)
    if truth.ndim != 2 or samples.ndim != 2 or truth.shape[1] != samples.shape[1]:
        raise ValueError(f"truth and samples must be [N, F] with the same F, got "
                         f"{truth.shape} and {samples.shape}")
    n = min(len(truth), len(samples), max_events or len(truth))
    if n < 8:
        raise ValueError(f"need at least 8 events of each, got {len(truth)} truth and "
                         f"{len(samples)} samples")
    cfg = cfg or WeakClassifierConfig(epochs=10, top_k=3, batch_size=512)
    rng = np.random.default_rng([seed, 31])
    t = truth[rng.choice(len(truth), n, replace=False)]
    s = samples[rng.choice(len(samples), n, replace=False)]
    (t_tr, t_va, t_te), (s_tr, s_va, s_te) = _split3(n, rng), _split3(n, rng)

    def xy(ti: np.ndarray, si: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([t[ti], s[si]]), np.r_[np.ones(len(ti)), np.zeros(len(si))]

    x_tr, y_tr = xy(t_tr, s_tr)
    x_va, y_va = xy(t_va, s_va)
    x_te, y_te = xy(t_te, s_te)
    clf = train_weak_classifier(x_tr, y_tr, x_va, y_va, cfg)
    n_te = len(t_te)
    names = list(names) if names is not None else [f"x{j}" for j in range(truth.shape[1])]
    return {"auc": float(auc(y_te, clf.predict(x_te))),
            "auc_null_sd": float(np.sqrt((2 * n_te + 1) / (12.0 * n_te**2))),
            "n_per_class": int(n), "n_test_per_class": int(n_te),
            "feature_auc": {nm: float(auc(y_te, x_te[:, j])) for j, nm in enumerate(names)},
            "epochs": cfg.epochs, "wall_s": round(time.perf_counter() - t0, 1)}
