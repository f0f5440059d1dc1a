"""Gradual magnitude pruning between blocks (Zhu & Gupta 2017, "To prune, or not to prune"):
before every block the prunable weights with the smallest magnitude ``|W| = |scale * Z|`` are
masked until the method's :class:`bmr_jax.bmr.TargetSparsity` schedule's fraction is pruned
(the cubic schedule ``s_t = s_f + (s_i - s_f)(1 - t)^3`` of their equation 1, with ``t`` the
block's place between ``begin`` and ``end``). A pruned weight stays pruned and its multiplier
sits at the spike (METHOD.md 2.1), so the network trains as the pruned network.

It is the frontier's classic baseline (issue 14): a point estimate (the ``delta`` guide), the
same network, data and step budget as the Bayesian methods, and the masks chosen by size
instead of by Delta F.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro import handlers

from bmr_jax.bmr.reduce import gamma_from_masks
from bmr_jax.methods.between import BETWEEN_BLOCKS


def magnitude_scores(bnet, guide, params) -> dict[str, jax.Array]:
    """``{layer: -|W|}`` for every Bayesian layer (the rule prunes the highest score first, as
    it prunes the highest Delta F), ``W = scale * Z`` so that layers compare on one scale; the
    scales' latent sites (the flat prior's ``c^-2``) at the guide's point."""
    with handlers.substitute(data=guide.median(params)):
        scales = bnet.prior.scales(bnet.view)
    return {s.name: -jnp.abs(scales[s.name] * params[f"{s.name}/z/loc"])
            for s in bnet.view.bayesian_layers}  # fmt: skip


def make_magnitude(method, trainer):
    """The jitted step: magnitudes from the guide's point, masks from ``method.rule``."""
    bnet, rule = trainer.bnet, method.rule
    prunable = {s.name: s.prunable for s in bnet.view.bayesian_layers}

    @jax.jit
    def step(state, masks, gamma, block, key):
        scores = magnitude_scores(bnet, trainer.guide, trainer.params(state))
        new_masks, info = rule(scores, masks, prunable, block)
        new_masks = {name: new_masks[name] & masks[name] for name in masks}  # permanent
        return state, new_masks, gamma_from_masks(new_masks), info

    return step


BETWEEN_BLOCKS.register("magnitude", make_magnitude)
