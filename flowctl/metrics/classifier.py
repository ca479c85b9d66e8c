"""Old import path, kept so existing imports keep working.

The classifier moved to :mod:`flowctl.classifiers` (training, prediction, calibration,
weights) and the ROC/AUC/JSD numbers to :mod:`flowctl.metrics.roc`; ``metrics/`` only turns
arrays into numbers. ``from flowctl.metrics.classifier import train_classifier`` still
resolves (lazily, so ``metrics`` does not import ``classifiers`` at import time).
"""

from __future__ import annotations

import importlib
from typing import Any

from .roc import auc, bootstrap_auc, jsd_from_bce, roc_curve

_MOVED = ("ClassifierConfig", "ClassifierPredictor", "ClassifierResult", "IsotonicCalibration",
          "classifier_state", "config_dict", "dctr_weights", "density_ratio",
          "train_classifier")

__all__ = ["auc", "bootstrap_auc", "jsd_from_bce", "roc_curve"]  # + the _MOVED names


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("flowctl.classifiers"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
