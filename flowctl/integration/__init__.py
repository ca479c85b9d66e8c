"""Neural importance sampling machinery for ``flowctl integrate`` (no Hydra, no files of runs).

Modules: ``losses`` (KL, variance, i-flow exponential), ``buffer`` (reused training points),
``trainer`` (the NIS training loop), ``grid`` (a VEGAS grid under the flow), ``sampler``
(grid + flow, multi-channel mixtures, :func:`train_nis`), ``sampling`` (fresh-point weights,
plain MC, the run-wide non-finite count, 1-D embedding), ``strata`` (stratified latent
points and their mean, shared by the estimate and the trainer's stratified batches),
``stratified`` (the estimate from stratified latent points), ``combine`` (the late training
batches joined to the estimate), ``answer`` (the estimate wiring: fresh estimate,
combination, census, diagnostics, unweighting; the i.i.d. re-estimate of ``evaluate``),
``diagnostics`` (ESS, max weight share, error of the error, Pareto k and the tail's share of
the variance; ``reliable``), ``peers`` (plain MC and VEGAS rows, the reference points of
``evaluate``), ``report`` (opening line, table, rows, the lines under it, the metrics.json
record, history file), ``unweight`` (calibrated accept/reject), ``persist`` (composite
sampler checkpoints), ``vegas`` (the VEGAS peer), ``madnis`` (the MadNIS peer of the
benchmark). ``flowctl.apps.integration`` wires them to configs and run directories.
"""

from flowctl.integration.buffer import Buffer
from flowctl.integration.diagnostics import (
    THRESHOLDS,
    Reliability,
    diagnose,
    pareto_k,
    tail_variance_share,
)
from flowctl.integration.errors import IntegrationError, NonFiniteError
from flowctl.integration.grid import GridMap, OnGrid, adapt_grid
from flowctl.integration.losses import LOSSES, exponential_loss, kl_loss, variance_loss
from flowctl.integration.sampler import (
    GridFlow,
    Mixture,
    TrainReport,
    build_sampler,
    channel_centres,
    train_nis,
)
from flowctl.integration.sampling import Guarded, NonFinite, flow_weights, plain_mc
from flowctl.integration.stratified import (
    StratifiedEstimate,
    can_stratify,
    fresh_estimate,
    stratified_estimate,
)
from flowctl.integration.trainer import (
    FORMAT,
    TRAINER_DEFAULTS,
    NISResult,
    check_trainer,
    train_sampler,
)
from flowctl.integration.vegas import run_vegas, vegas_available, vegas_weights

__all__ = [
    "FORMAT",
    "LOSSES",
    "THRESHOLDS",
    "TRAINER_DEFAULTS",
    "Buffer",
    "GridFlow",
    "GridMap",
    "Guarded",
    "IntegrationError",
    "Mixture",
    "NISResult",
    "NonFinite",
    "NonFiniteError",
    "OnGrid",
    "Reliability",
    "StratifiedEstimate",
    "TrainReport",
    "adapt_grid",
    "build_sampler",
    "can_stratify",
    "channel_centres",
    "check_trainer",
    "diagnose",
    "exponential_loss",
    "flow_weights",
    "fresh_estimate",
    "kl_loss",
    "pareto_k",
    "plain_mc",
    "run_vegas",
    "stratified_estimate",
    "tail_variance_share",
    "train_nis",
    "train_sampler",
    "variance_loss",
    "vegas_available",
    "vegas_weights",
]
