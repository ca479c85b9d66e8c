"""Numbers from arrays: likelihood summaries, divergences, classifier scores."""

from flowctl.metrics.density import kl_divergence, mean_and_se, nll

__all__ = ["kl_divergence", "mean_and_se", "nll"]
