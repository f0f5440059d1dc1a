"""BMR-S&S between blocks (METHOD.md 4.5): Delta F of every weight from the mean-field
posterior, the method's decision rule, pruned weights' multipliers at the spike."""

from __future__ import annotations

import jax

from bmr_jax.bmr.reduce import gamma_from_masks, make_reduce
from bmr_jax.methods.between import BETWEEN_BLOCKS, prior_variances


def make_spike_and_slab(method, trainer):
    """The jitted step: read ``{layer: (mean, precision)}`` from the guide, reduce
    (``bmr_jax.bmr.make_reduce``), and with ``method.write_back`` put the reduced posterior
    into the guide (the optimiser's moments are kept)."""
    guide, write_back = trainer.guide, method.write_back
    reduce = make_reduce(trainer.bnet.view, method.rule, prior_variances(trainer.bnet))

    @jax.jit
    def step(state, masks, gamma, block, key):
        posterior = guide.posterior(trainer.params(state))
        result = reduce(posterior, masks, block, write_back)
        if write_back:
            state = trainer.set_params(state, guide.posterior_params(result.reduced))
        return state, result.masks, gamma_from_masks(result.masks), result.info

    return step


BETWEEN_BLOCKS.register("spike_and_slab", make_spike_and_slab)
