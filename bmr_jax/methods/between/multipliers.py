"""Structured BMR on unit multipliers between blocks: every unit's ``theta_j``
(:mod:`bmr_jax.bayes.priors.unit_scaled`) read from the mean-field guide, its Delta F -- the
spike on a normal multiplier (METHOD.md 4.1 on one scalar), or BMRS_U on SBP's log-uniform one
(:mod:`bmr_jax.bmr.bmrs`) -- the method's rule over each layer's units, removed units' rows and
reading columns at the spike (:func:`bmr_jax.bmr.groups.make_multiplier_reduce`)."""

from __future__ import annotations

from functools import partial

import jax

from bmr_jax.bayes.priors.unit_scaled import LOG_THETA_HIGH, LOG_THETA_LOW, UnitScaledPrior
from bmr_jax.bmr.bmrs import bmrs_uniform_delta_f
from bmr_jax.bmr.groups import make_multiplier_reduce, spike_score
from bmr_jax.bmr.reduce import gamma_from_masks
from bmr_jax.methods.between import BETWEEN_BLOCKS, prior_variances


def make_multipliers(method, trainer):
    """The jitted step (the trainer's prior must be a :class:`UnitScaledPrior`)."""
    prior = trainer.bnet.prior
    if not isinstance(prior, UnitScaledPrior):
        raise ValueError("unit multipliers need the unit-scaled prior")
    if method.write_back:
        raise ValueError("structured BMR on unit multipliers does not write back")
    if prior.theta_prior == "normal":
        score = spike_score(prior.theta_scale**2)
    else:  # BMRS_U on SBP's log-uniform multipliers
        score = partial(bmrs_uniform_delta_f, low=LOG_THETA_LOW, high=LOG_THETA_HIGH)
    reduce = make_multiplier_reduce(trainer.bnet.view, prior.units, score, method.rule,
                                    method.within, prior_variances(trainer.bnet))

    @jax.jit
    def step(state, masks, gamma, block, key):
        params = trainer.params(state)
        theta = {g.label: (params[f"{prior.site(g)}/loc"], params[f"{prior.site(g)}/scale"])
                 for g in prior.units}  # fmt: skip
        result = reduce(theta, trainer.guide.posterior(params), masks, block)
        return state, result.masks, gamma_from_masks(result.masks), result.info

    return step


BETWEEN_BLOCKS.register("multipliers", make_multipliers)
