"""Group BMR between blocks (:mod:`bmr_jax.bmr.groups`): whole units of a mean-field
posterior -- neurons, conv channels, attention heads, feed-forward units -- scored by the
summed spike Delta F of their incoming and outgoing weights, the method's rule applied to each
layer's units, and optionally its weight-wise rule inside the kept ones."""

from __future__ import annotations

import jax

from bmr_jax.bayes.units import network_units
from bmr_jax.bmr.groups import make_group_reduce
from bmr_jax.bmr.reduce import gamma_from_masks
from bmr_jax.methods.between import BETWEEN_BLOCKS, prior_variances


def make_groups(method, trainer, *, sequential: bool = True):
    """The jitted step: read ``{layer: (mean, precision)}`` from the guide and reduce whole
    units (``bmr_jax.bmr.make_group_reduce``); no write-back."""
    if method.write_back:
        raise ValueError("group BMR does not write the reduced posterior back")
    geometries = network_units(trainer.bnet, sequential=sequential)
    if not geometries:
        raise ValueError("group BMR: the network has no units to remove")
    reduce = make_group_reduce(trainer.bnet.view, geometries, method.rule, method.within,
                               prior_variances(trainer.bnet))  # fmt: skip

    @jax.jit
    def step(state, masks, gamma, block, key):
        result = reduce(trainer.guide.posterior(trainer.params(state)), masks, block)
        return state, result.masks, gamma_from_masks(result.masks), result.info

    return step


BETWEEN_BLOCKS.register("groups", make_groups)
