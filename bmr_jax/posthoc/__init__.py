"""Post-hoc BMR for a network trained the usual way (issue 39): a Laplace posterior around its
weights (:mod:`~bmr_jax.posthoc.curvature`: the GGN diagonal), its prior precision chosen by the
Laplace evidence (:mod:`~bmr_jax.posthoc.evidence`), and pruning by the evidence of the spike
(:mod:`~bmr_jax.posthoc.prune`), then optionally a short refit of the kept weights
(:mod:`~bmr_jax.posthoc.refit`). No Bayesian retraining::

    ggn = ggn_diagonal(apply, params, images)          # apply(params, x) -> logits
    delta = calibrate_prior_precision(params, ggn)
    masks = prune_laplace(laplace_posterior(params, ggn, delta))
"""

from bmr_jax.posthoc.curvature import ggn_diagonal, log_likelihood, output_factors
from bmr_jax.posthoc.evidence import calibrate_prior_precision, log_marginal_likelihood
from bmr_jax.posthoc.prune import (
    LaplacePosterior,
    laplace_delta_f,
    laplace_posterior,
    obd_saliency,
    prune_laplace,
)
from bmr_jax.posthoc.refit import refit

__all__ = [
    "LaplacePosterior",
    "calibrate_prior_precision",
    "ggn_diagonal",
    "laplace_delta_f",
    "laplace_posterior",
    "log_likelihood",
    "log_marginal_likelihood",
    "obd_saliency",
    "output_factors",
    "prune_laplace",
    "refit",
]
