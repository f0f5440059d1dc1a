"""Structured BMR on unit multipliers between blocks: every unit's ``theta_j``
(:mod:`bmr_jax.bayes.priors.unit_scaled`) read from the mean-field guide, its spike Delta F
(METHOD.md 4.1 on one scalar), the method's rule over each layer's units, removed units' rows
and reading columns at the spike (:func:`bmr_jax.bmr.groups.make_multiplier_reduce`)."""

from __future__ import annotations

import jax

from bmr_jax.bayes.priors.unit_scaled import UnitScaledPrior, theta_site
from bmr_jax.bmr.groups import make_multiplier_reduce
from bmr_jax.bmr.reduce import gamma_from_masks
from bmr_jax.methods.between import BETWEEN_BLOCKS, prior_variances


def make_multipliers(method, trainer):
    """The jitted step (the trainer's prior must be a :class:`UnitScaledPrior`)."""
    prior = trainer.bnet.prior
    if not isinstance(prior, UnitScaledPrior):
        raise ValueError("unit multipliers need the unit-scaled prior")
    if method.write_back:
        raise ValueError("structured BMR on unit multipliers does not write back")
    reduce = make_multiplier_reduce(trainer.bnet.view, prior.units, method.rule, method.within,
                                    prior.theta_scale**2, prior_variances(trainer.bnet))

    @jax.jit
    def step(state, masks, gamma, block, key):
        params = trainer.params(state)
        theta = {g.label: (params[f"{theta_site(g)}/loc"],
                           1.0 / jax.numpy.square(params[f"{theta_site(g)}/scale"]))
                 for g in prior.units}  # fmt: skip
        result = reduce(theta, trainer.guide.posterior(params), masks, block)
        return state, result.masks, gamma_from_masks(result.masks), result.info

    return step


BETWEEN_BLOCKS.register("multipliers", make_multipliers)
