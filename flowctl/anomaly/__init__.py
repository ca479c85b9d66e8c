"""Weakly supervised resonant anomaly detection (CATHODE, CWoLa hunting, idealized AD).

Library pieces only (numpy / torch, no Hydra, no implicit files); ``flowctl.apps.anomaly``
wires them to the LHC Olympics data. Import the submodules directly, e.g.
``from flowctl.anomaly.classifier import train_weak_classifier``; this package ``__init__``
imports nothing so that ``import flowctl.anomaly`` stays cheap.

Modules: ``classifier`` (the CATHODE classifier recipe, CWoLa weights, k-fold scoring),
``summary`` (medians and 16–84 % bands over runs, the max SIC of the median curve).
"""
