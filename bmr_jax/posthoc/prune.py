"""BMR on the Laplace posterior of a trained network (issue 39; METHOD.md 4.1, 4.4).

The posterior of every weight is ``N(theta, 1 / (h + delta))`` (trained value, GGN diagonal
``h`` from :mod:`.curvature`, prior precision ``delta`` from :mod:`.evidence`), under the
prior ``N(0, 1 / delta)``. Removing a weight is the reduced prior of the spike, whose log
evidence change is ``Delta F = 1/2 [ln(pi / delta) - pi theta^2]`` with ``pi = h + delta``
(:func:`bmr_jax.bmr.delta_f_spike`, METHOD.md 4.1): a weight is pruned where the evidence
favours it gone. The masks come from the spike-and-slab rule with a learned inclusion rate,
the evidence rule ``Delta F > threshold``, or a target fraction of the largest Delta F
(:func:`bmr_jax.bmr.pruning.masks_from_delta_f`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bmr_jax.bmr.delta_f import delta_f_spike
from bmr_jax.bmr.pruning import masks_from_delta_f, selected_leaves
from bmr_jax.posthoc.evidence import per_leaf

RULES = ("spike_and_slab", "evidence", "target")


class LaplacePosterior(NamedTuple):
    """A diagonal Gaussian posterior around trained weights: pytrees like the parameters."""

    mean: object
    precision: object  # h + delta
    prior_precision: object  # delta, per leaf


def laplace_posterior(params, ggn, prior_precision) -> LaplacePosterior:
    """``N(params, 1 / (ggn + prior_precision))``; ``prior_precision`` a number or a pytree
    of numbers like ``params`` (:func:`.evidence.calibrate_prior_precision`)."""
    prior_precision = per_leaf(prior_precision, params)
    precision = jax.tree.map(lambda h, d: h + d, ggn, prior_precision)
    return LaplacePosterior(params, precision, prior_precision)


def laplace_delta_f(posterior: LaplacePosterior):
    """Delta F of the spike for every parameter (positive: prune)."""
    return jax.tree.map(lambda m, pi, d: delta_f_spike(m, pi, 1.0 / d)[0], posterior.mean,
                        posterior.precision, posterior.prior_precision)  # fmt: skip


def prune_laplace(posterior: LaplacePosterior, *, rule: str = "spike_and_slab",
                  fraction: float | None = None, threshold: float = 0.0,
                  prunable=None):  # fmt: skip
    """Boolean masks like the parameters (True = kept) by ``rule``: ``spike_and_slab`` per
    selected leaf, ``evidence`` (``Delta F > threshold`` pruned) or ``target`` (``fraction``
    of the selected entries, largest Delta F first, across leaves). ``prunable(path, leaf)``
    selects the leaves (default: those with two or more dimensions, the kernels)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if (rule == "target") != (fraction is not None):
        raise ValueError("fraction: give it with rule='target' and only then")
    selected = selected_leaves(posterior.mean, prunable)
    alive = jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), posterior.mean)
    delta_f = laplace_delta_f(posterior)
    if rule == "evidence":
        return jax.tree.map(lambda a, df, c: a & (df <= threshold) if c else a, alive, delta_f,
                            selected)  # fmt: skip
    return masks_from_delta_f(delta_f, alive, selected, fraction)


def obd_saliency(posterior: LaplacePosterior):
    """Optimal Brain Damage's saliency ``1/2 h theta^2`` (LeCun et al. 1990) from the same
    curvature (``h = precision - prior precision``): the loss increase of removing a weight."""
    return jax.tree.map(lambda m, pi, d: 0.5 * (pi - d) * m**2, posterior.mean,
                        posterior.precision, posterior.prior_precision)  # fmt: skip
