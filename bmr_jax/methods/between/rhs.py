"""BMR-RHS between blocks (METHOD.md 4.6): the regularised horseshoe's hyper-parameters fitted
with Delta F as their likelihood; every weight's multiplier becomes its fitted scale."""

from __future__ import annotations

import jax

from bmr_jax.bmr.rhs import flat_posterior, make_rhs_fit, rescaled_posterior, rhs_gamma_and_masks
from bmr_jax.methods.between import BETWEEN_BLOCKS, prior_variances


def make_rhs(method, trainer):
    """The jitted step: the guide's posterior taken back to the flat prior, the fit
    (``bmr_jax.bmr.rhs``), multipliers under ``method.rhs.threshold`` pruned, and with
    ``method.write_back`` the posterior rescaled to the new multipliers, so that the kept
    weights' function carries over."""
    guide, config = trainer.guide, method.rhs
    fit = make_rhs_fit(trainer.bnet.view, config)
    prior_var = prior_variances(trainer.bnet)

    @jax.jit
    def step(state, masks, gamma, block, key):
        posterior = guide.posterior(trainer.params(state))
        fitted, losses = fit(key, flat_posterior(posterior, gamma, masks))
        new_gamma, new_masks = rhs_gamma_and_masks(fitted, masks, config.threshold)
        if method.write_back:
            reduced = rescaled_posterior(posterior, gamma, new_gamma, prior_var)
            state = trainer.set_params(state, guide.posterior_params(reduced))
        return state, new_masks, new_gamma, {"fit_loss": losses[-1]}

    return step


BETWEEN_BLOCKS.register("rhs", make_rhs)
