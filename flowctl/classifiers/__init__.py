"""flowctl's one binary-classifier package: MLP, the training loop (early stopping, epoch
ensembles), prediction, calibration, class/DCTR weights and k-fold scoring.

Used by the calorimeter evaluation (AUC truth vs generated), classifier reweighting (DCTR,
DiscFlow), anomaly detection (CATHODE, CWoLa, idealized, supervised) and the Gaia stream
search. The ROC/AUC/JSD numbers come from :mod:`flowctl.metrics.roc`.

* :mod:`.mlp` — ``build_mlp`` (LeakyReLU or ReLU), ``predict_proba`` (mean of sigmoids over an
  ensemble), ``standardizer``;
* :mod:`.fit` — ``fit_classifier``: weighted BCE, Adam, top-k epochs by val loss, patience;
* :mod:`.two_sample` — ``train_classifier``: sample 0 vs sample 1 with a train/val/test split,
  isotonic calibration, AUC ± bootstrap, JSD (CaloChallenge recipe); save/load;
* :mod:`.ensemble` — ``train_weak_classifier``: CATHODE's epoch- and run-ensembled classifier;
* :mod:`.kfold` — out-of-fold scores; :mod:`.weights` — balanced / DCTR weights;
  :mod:`.calibration` — isotonic regression.
"""

from .calibration import IsotonicCalibration
from .ensemble import WeakClassifier, WeakClassifierConfig, train_weak_classifier
from .fit import FitResult, fit_classifier
from .kfold import KFoldResult, fold_of_rows, kfold_fit_score, kfold_indices, kfold_scores
from .mlp import build_mlp, predict_proba, standardizer
from .two_sample import (
    ClassifierConfig,
    ClassifierPredictor,
    ClassifierResult,
    classifier_state,
    config_dict,
    train_classifier,
)
from .weights import balanced_weights, dctr_weights, density_ratio

__all__ = [
    "ClassifierConfig",
    "ClassifierPredictor",
    "ClassifierResult",
    "FitResult",
    "IsotonicCalibration",
    "KFoldResult",
    "WeakClassifier",
    "WeakClassifierConfig",
    "balanced_weights",
    "build_mlp",
    "classifier_state",
    "config_dict",
    "dctr_weights",
    "density_ratio",
    "fit_classifier",
    "fold_of_rows",
    "kfold_fit_score",
    "kfold_indices",
    "kfold_scores",
    "predict_proba",
    "standardizer",
    "train_classifier",
    "train_weak_classifier",
]
