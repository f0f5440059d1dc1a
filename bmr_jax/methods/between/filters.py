"""L1-norm filter pruning between blocks (Li, Kadav, Durdanovic, Samet, Graf 2017, "Pruning
filters for efficient ConvNets", section 3.1): a unit's importance is the sum of the absolute
values of its kernel weights, ``s_j = sum_k |W_jk|`` (its producer rows without the bias; a
head's query, key and value rows), and each layer's units with the smallest ``s_j`` are
removed -- their rows and the columns that read them (:mod:`bmr_jax.bmr.groups`) -- until the
method's :class:`bmr_jax.bmr.TargetSparsity` schedule's fraction of the layer's units is gone.

It is the structured magnitude baseline of group BMR: a point estimate (the ``delta`` guide),
the same units, the same schedule, the units chosen by their weights' size instead of by the
evidence. Li et al. prune once and retrain; here the cubic schedule of gradual pruning removes
them over the blocks (Zhu & Gupta 2017) and ``bmr.refit_blocks`` retrains the smaller network,
so that every method has the same budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bmr_jax.bayes.units import network_units
from bmr_jax.bmr.groups import remove_units
from bmr_jax.bmr.reduce import gamma_from_masks
from bmr_jax.methods.between import BETWEEN_BLOCKS
from bmr_jax.methods.between.magnitude import magnitude_scores


def filter_norms(geometry, weights, masks, has_bias) -> jax.Array:
    """``(units,)`` L1 norm of each unit's kept kernel weights (``has_bias[layer]``: the
    layer's last column is its bias, left out)."""
    kernel = {}
    for name in geometry.link.producers:
        cols = weights[name].shape[1]
        is_kernel = jnp.arange(cols) < cols - int(has_bias[name])
        kernel[name] = jnp.where(masks[name] & is_kernel[None, :], jnp.abs(weights[name]), 0.0)
    return geometry.row_sums(kernel)


def make_filters(method, trainer, *, sequential: bool = True):
    """The jitted step: filter norms at the guide's point, ``method.rule`` over each layer's
    units (the lowest norm goes first), removed units' rows and reading columns pruned."""
    geometries = network_units(trainer.bnet, sequential=sequential)
    if not geometries:
        raise ValueError("L1 filter pruning: the network has no units to remove")
    bnet, rule = trainer.bnet, method.rule
    has_bias = {s.name: s.has_bias for s in bnet.view.bayesian_layers}

    @jax.jit
    def step(state, masks, gamma, block, key):
        weights = {name: -score for name, score in
                   magnitude_scores(bnet, trainer.guide, trainer.params(state)).items()}
        scores = {g.label: -filter_norms(g, weights, masks, has_bias) for g in geometries}
        new_masks, info = remove_units(geometries, rule, scores, masks, block)
        return state, new_masks, gamma_from_masks(new_masks), info

    return step


BETWEEN_BLOCKS.register("filters", make_filters)
