"""Group BMR on a mean-field posterior: whole units (neurons, conv channels, attention heads)
scored by the evidence of removing all of their weights at once.

A unit (:class:`bmr_jax.bayes.units.UnitLink`) is a set of rows of its producer layers (the
weights computing it, bias included) and the columns of its consumer layer that read it. The
reduced model "the unit is absent" puts the spike prior on every one of those entries. Under a
mean-field posterior the entries are independent, so its evidence is the sum of the entries'
spike Delta F (METHOD.md 4.1 in the spike limit, summed):

    Delta F_unit = sum_{k in unit} 1/2 [ ln(pi_k s) - pi_k mu_k^2 ]

(the Savage-Dickey ratio of a product of independent Gaussians). Entries already pruned count
0: their prior is the spike already. Exactly, the columns add nothing (once a unit outputs 0
the weights reading it do not touch the likelihood), but under the mean-field approximation
they are the unit's outgoing half: a unit whose output the next layer uses has informative,
negative-Delta F columns. Counting both halves is what removes the whole structure the export
takes out (:mod:`bmr_jax.export`).

A decision rule (:mod:`bmr_jax.bmr.decide`) then runs over each link's units exactly as it
runs over a layer's weights: the spike-and-slab rule learns a per-layer *unit* inclusion rate,
``target`` removes a scheduled fraction of the units. Optionally a second, weight-wise rule
prunes single weights inside the kept units (structured first, then unstructured).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from bmr_jax.bayes.layers import LayerView
from bmr_jax.bayes.units import UnitGeometry
from bmr_jax.bmr.decide import Rule
from bmr_jax.bmr.delta_f import delta_f
from bmr_jax.bmr.reduce import ReduceResult


def unit_delta_f(geometry: UnitGeometry, entry_delta_f, masks) -> jnp.ndarray:
    """``(units,)`` Delta F of removing each unit: the alive entries' spike Delta F summed over
    its producer rows and its consumer columns (module docstring)."""
    alive_df = {name: jnp.where(masks[name], entry_delta_f[name], 0.0)
                for name in (*geometry.link.producers, geometry.link.consumer)}  # fmt: skip
    return geometry.row_sums(alive_df) + geometry.column_sums(alive_df[geometry.link.consumer])


def remove_units(geometries: tuple[UnitGeometry, ...], rule: Rule, scores, masks, block):
    """``(masks, info)``: ``rule`` over each link's units (``scores``: ``{label: (units,)}``,
    the highest pruned first; a unit is alive while its rows are), the rows and reading
    columns of every unit it removes pruned."""
    alive = {g.label: g.alive(masks) for g in geometries}
    keep, info = rule(scores, alive, {g.label: True for g in geometries}, block)
    new_masks = dict(masks)
    for g in geometries:
        new_masks = g.remove(new_masks, keep[g.label])
    return new_masks, info


def _prune_within(within: Rule | None, entry_delta_f, masks, prunable, block, info) -> dict:
    """``masks`` with ``within`` (a weight-wise rule, or None) applied to the entries' spike
    Delta F; its info goes into ``info["within"]``."""
    if within is None:
        return masks
    weights, info["within"] = within(entry_delta_f, masks, prunable, block)
    return {name: weights[name] & masks[name] for name in masks}


def make_group_reduce(view: LayerView, geometries: tuple[UnitGeometry, ...], rule: Rule,
                      within: Rule | None = None,
                      prior_var: Mapping[str, float] | None = None):  # fmt: skip
    """``reduce(posterior, masks, block) -> ReduceResult``, pure and jit-able.

    ``posterior`` is ``{layer: (mean, precision)}`` of ``Z`` (mean-field). Every entry's spike
    Delta F (METHOD.md 4.1), each unit's sum (:func:`unit_delta_f`), ``rule`` over each link's
    units (keyed by the link's label), the removed units' rows and columns pruned; then, with
    ``within``, that weight-wise rule over every prunable layer's remaining entries.
    ``ReduceResult.delta_f`` holds the per-unit Delta F; ``info`` the rules' (the weight rule's
    under ``"within"``).
    """
    layers = [s.name for s in view.bayesian_layers]
    prunable = {s.name: s.prunable for s in view.bayesian_layers}
    prior_var = {name: 1.0 for name in layers} if prior_var is None else dict(prior_var)

    def reduce(posterior, masks, block):
        df = {name: delta_f(*posterior[name], prior_var[name], 0.0)[0] for name in layers}
        scores = {g.label: unit_delta_f(g, df, masks) for g in geometries}
        new_masks, info = remove_units(geometries, rule, scores, masks, block)
        new_masks = _prune_within(within, df, new_masks, prunable, block, info)
        return ReduceResult(new_masks, scores, info, None)

    return reduce


def make_multiplier_reduce(view: LayerView, geometries: tuple[UnitGeometry, ...], score,
                           rule: Rule, within: Rule | None = None,
                           prior_var: Mapping[str, float] | None = None):  # fmt: skip
    """``reduce(theta_posterior, posterior, masks, block) -> ReduceResult`` for units that
    carry a multiplier (:mod:`bmr_jax.bayes.priors.unit_scaled`).

    ``theta_posterior``: ``{label: (loc, scale)}`` of each link's multipliers (mean-field);
    ``score(loc, scale)`` is a unit's Delta F from its multiplier alone: the spike on a
    ``N(0, v)`` multiplier (METHOD.md 4.1 on one scalar, :func:`spike_score`) or BMRS's
    (:func:`bmr_jax.bmr.bmrs.bmrs_uniform_delta_f`). ``rule`` runs over each link's units, and
    a removed unit loses its rows and reading columns.
    ``within`` then runs over the weights' own spike Delta F (``posterior``: ``{layer: (mean,
    precision)}`` of ``Z``) inside the kept units.
    """
    layers = [s.name for s in view.bayesian_layers]
    prunable = {s.name: s.prunable for s in view.bayesian_layers}
    prior_var = {name: 1.0 for name in layers} if prior_var is None else dict(prior_var)

    def reduce(theta_posterior, posterior, masks, block):
        scores = {g.label: score(*theta_posterior[g.label]) for g in geometries}
        new_masks, info = remove_units(geometries, rule, scores, masks, block)
        if within is not None:
            df = {name: delta_f(*posterior[name], prior_var[name], 0.0)[0] for name in layers}
            new_masks = _prune_within(within, df, new_masks, prunable, block, info)
        return ReduceResult(new_masks, scores, info, None)

    return reduce


def spike_score(prior_var: float = 1.0):
    """``score(loc, scale)``: the spike Delta F of a ``N(loc, scale^2)`` posterior under a
    ``N(0, prior_var)`` prior, ``1/2 [ln(prior_var / scale^2) - loc^2 / scale^2]``."""
    return lambda loc, scale: delta_f(loc, 1.0 / jnp.square(scale), prior_var, 0.0)[0]
