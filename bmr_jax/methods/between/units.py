"""Structured BMR between blocks (METHOD.md 4.3): whole units scored in closed form from a
matrix-normal guide, the method's rule applied to each layer's units."""

from __future__ import annotations

import jax

from bmr_jax.bayes.units import unit_links
from bmr_jax.bmr.reduce import gamma_from_masks, make_unit_reduce
from bmr_jax.methods.between import BETWEEN_BLOCKS, prior_variances


def make_units(method, trainer):
    """The jitted step: read ``{layer: (M, u, V)}`` from the guide, prune whole rows, and
    whole attention heads (query, key and value rows with the output projection's columns)."""
    if method.write_back:
        raise ValueError("structured BMR cannot write back a matrix-normal posterior")
    guide = trainer.guide
    bnet = trainer.bnet
    links = unit_links(bnet.initial_module(), bnet.view, sequential=False)
    heads = tuple(link for link in links if link.kind == "head")
    reduce = make_unit_reduce(bnet.view, method.rule, prior_variances(bnet), heads)

    @jax.jit
    def step(state, masks, gamma, block, key):
        result = reduce(guide.posterior(trainer.params(state)), masks, block)
        return state, result.masks, gamma_from_masks(result.masks), result.info

    return step


BETWEEN_BLOCKS.register("units", make_units)
