"""BMR-RHS: empirical Bayes for the regularised horseshoe through BMR (METHOD.md 4.6).

The hyper-parameters ``h`` of the regularised horseshoe (slab precisions, layer-wise global
and neuron-wise local scales, as in :class:`bmr_jax.bayes.priors.HorseshoePrior`) are treated as
latent, and the BMR evidence of the reduced prior ``N(0, gamma(h)^2)`` on every ``Z`` against
its flat ``N(0, 1)`` prior is their likelihood::

    ln p(h) + sum_k DeltaF_k(gamma_k(h)^2)

``q(h)`` (mean-field log-normal) is fitted by its own short SVI with many particles; it only
touches ``h``, never the network, so a few thousand steps cost about as much as a few training
steps. Each weight's prior multiplier is then set to ``gamma_k`` at the median of ``q(h)``,
and multipliers below ``threshold`` are pruned (set to the spike). The classifier keeps its
flat prior and is never pruned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpyro
import optax
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO

from bmr_jax.bayes.guides import MeanFieldGuide, latent_sites
from bmr_jax.bayes.layers import LayerView
from bmr_jax.bayes.priors import HorseshoePrior
from bmr_jax.bmr.delta_f import delta_f


@dataclass(frozen=True)
class RHSConfig:
    """Settings of the hyper-parameter fit.

    Attributes:
      prior: the horseshoe whose hyper-parameters are fitted; its ``init_scale`` (1: no
        shrinkage) is where ``q(h)`` starts.
      steps, particles, lr: the SVI over ``h`` (Adam).
      threshold: multipliers ``gamma`` below it are pruned (0.1: the reduced prior's scale is
        under a tenth of the flat prior's).
    """

    prior: HorseshoePrior = field(default_factory=lambda: HorseshoePrior(init_scale=1.0))
    steps: int = 1000
    particles: int = 8
    lr: float = 2e-2
    threshold: float = 0.1


def make_rhs_fit(view: LayerView, config: RHSConfig = RHSConfig()):
    """A jitted ``fit(key, posterior) -> (gamma, losses)`` for the prunable layers of ``view``.

    ``posterior`` is ``{layer: (mean, precision)}`` of ``Z``; ``gamma`` is ``{layer: (rows,
    cols) multipliers at the median of q(h)}`` and ``losses`` the negative ELBO per step.
    """
    layers = tuple(s for s in view.bayesian_layers if s.prunable)
    sub_view = LayerView(layers)
    prior = config.prior

    def model(posterior):
        scales = prior.scales(sub_view)
        for spec in layers:
            mean, precision = posterior[spec.name]
            # bounded away from 0 and infinity: heavy-tailed draws of the half-Cauchy scales
            # would otherwise overflow float32 while q(h) is still wide
            reduced = jnp.clip(jnp.square(jnp.broadcast_to(scales[spec.name], spec.shape)),
                               1e-12, 1e4)  # fmt: skip
            df, _, _ = delta_f(mean, precision, 1.0, reduced)
            numpyro.factor(f"{spec.name}/bmr", jnp.sum(df))  # METHOD.md 4.6 likelihood

    init = prior.init_values(sub_view)
    example = {s.name: (jnp.zeros(s.shape), jnp.ones(s.shape)) for s in layers}
    guide = MeanFieldGuide(latent_sites(model, example, init_values=init), init, init_scale=0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(100.0), optax.adam(config.lr))
    svi = SVI(model, guide, optimizer, Trace_ELBO(num_particles=config.particles))

    @jax.jit
    def fit(key, posterior):
        init_key, run_key = jax.random.split(key)
        state = svi.init(init_key, posterior)

        def body(state, _):
            return svi.update(state, posterior)

        state, losses = jax.lax.scan(body, state, None, length=config.steps)
        params = svi.get_params(state)
        median = {name: jnp.exp(params[f"{name}/loc"]) for name in guide.sites}
        with handlers.seed(rng_seed=0), handlers.substitute(data=median):
            scales = prior.scales(sub_view)
        gamma = {s.name: jnp.broadcast_to(scales[s.name], s.shape) for s in layers}
        return gamma, losses

    return fit


def flat_posterior(posterior, gamma, masks):
    """The posterior of ``Z`` under the flat ``N(0, 1)`` prior, recovered from the guide's
    posterior over ``Z' = Z / gamma`` fitted under the reduced prior (multipliers ``gamma``):
    in flat coordinates the guide is ``N(gamma mu, gamma^2 / pi)`` under the prior
    ``N(0, gamma^2)``; multiplying by ``N(0, 1) / N(0, gamma^2)`` gives precision
    ``(pi - 1) / gamma^2 + 1`` (the inverse of a reduction, METHOD.md 4.1). A variational
    posterior no tighter than its prior (``pi <= 1 + 1e-3``, an artefact of stochastic
    fitting) implies no likelihood information, so it is taken as the prior itself (mean 0,
    precision 1): with a non-zero mean it would imply an improper likelihood whose evidence
    grows without bound with the reduced variance. Pruned weights also get the flat prior:
    they stay pruned whatever the fit says."""
    out = {}
    for name, (mean, precision) in posterior.items():
        uninformed = precision <= 1.0 + 1e-3
        precision = jnp.where(uninformed, 1.0, precision)
        mean = jnp.where(uninformed, 0.0, mean)
        g = jnp.where(masks[name], gamma[name], 1.0)
        flat_precision = (precision - 1.0) / jnp.square(g) + 1.0
        flat_mean = (precision / jnp.square(g)) * (g * mean) / flat_precision
        out[name] = (
            jnp.where(masks[name], flat_mean, 0.0),
            jnp.where(masks[name], flat_precision, 1.0),
        )
    return out


def rhs_gamma_and_masks(gamma_fit, masks, threshold: float):
    """Masks after the fit and the prior multipliers to train with: ``gamma`` where kept,
    the spike where pruned, 1 for layers that were not fitted (the classifier)."""
    from bmr_jax.bayes.model import PRUNED_GAMMA

    new_masks = rhs_masks(gamma_fit, masks, threshold)
    dtype = jnp.result_type(float)
    gamma = {
        k: jnp.where(m, gamma_fit[k] if k in gamma_fit else 1.0, PRUNED_GAMMA).astype(dtype)
        for k, m in new_masks.items()
    }
    return gamma, new_masks


def rhs_masks(gamma: Mapping[str, jax.Array], masks: Mapping[str, jax.Array], threshold: float):
    """New masks (``alive & gamma >= threshold``; layers without a fitted gamma unchanged)."""
    return {k: m & (gamma[k] >= threshold) if k in gamma else m for k, m in masks.items()}


def rescaled_posterior(posterior, old_gamma, new_gamma, prior_var):
    """``{layer: (mean, precision)}`` of the guide after the prior multipliers change from
    ``old_gamma`` to ``new_gamma``: the reduced posterior of ``Z_old`` under the reduced prior
    ``N(0, s (new / old)^2)`` in the new non-centred coordinates (METHOD.md 4.1, 4.6;
    :func:`bmr_jax.bmr.noncentred_reduced_posterior`). A ratio under 1e-6 is a pruned weight:
    it returns to its prior ``N(0, s)``."""
    from bmr_jax.bmr.reduce import noncentred_reduced_posterior

    reduced = {}
    for name, (mean, precision) in posterior.items():
        # a posterior wider than its prior carries nothing beyond it: keeps d > 0
        precision = jnp.maximum(precision, 1.0 / prior_var[name])
        ratio = new_gamma[name] / old_gamma[name]
        g = prior_var[name] * jnp.square(jnp.where(ratio < 1e-6, 0.0, ratio))
        reduced[name] = noncentred_reduced_posterior(mean, precision, prior_var[name], g)
    return reduced
