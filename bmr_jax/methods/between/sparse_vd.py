"""Sparse VD between blocks (Molchanov et al. 2017, section 4.3): a weight is pruned while its
dropout rate's log, ``log alpha = log sigma^2 - log theta^2``, is above 3.

The masks are recomputed from the guide before every block (nothing ratchets), over every
Bayesian layer, the classifier included, as the paper prunes it. The next block trains with
the pruned weights' multipliers at the spike (METHOD.md 2.1), so they contribute neither mean
nor noise, as the paper's training-time clipping of the means does; the KL keeps pushing their
``alpha`` up, so they stay pruned.
"""

from __future__ import annotations

import jax

from bmr_jax.bayes.priors.log_uniform import PRUNE_LOG_ALPHA, log_alpha
from bmr_jax.bmr.reduce import gamma_from_masks
from bmr_jax.methods.between import BETWEEN_BLOCKS


def sparse_vd_masks(guide, params) -> dict[str, jax.Array]:
    """``{layer: kept}``: ``log alpha <= 3`` for every weight of every Bayesian layer."""
    return {layer: log_alpha(params[f"{layer}/z/loc"], params[f"{layer}/z/scale"])
            <= PRUNE_LOG_ALPHA for layer in guide.layers()}  # fmt: skip


def make_sparse_vd(method, trainer):
    """The jitted step: masks from ``log alpha``, multipliers from the masks."""
    guide = trainer.guide

    @jax.jit
    def step(state, masks, gamma, block, key):
        masks = sparse_vd_masks(guide, trainer.params(state))
        return state, masks, gamma_from_masks(masks), {}

    return step


BETWEEN_BLOCKS.register("sparse_vd", make_sparse_vd)
