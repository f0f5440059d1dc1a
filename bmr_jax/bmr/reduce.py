"""The reduce step between training blocks (METHOD.md 4.5), and sparsity accounting.

One jitted call computes Delta F of the spike reduction for every prunable weight of every
layer from the guide's posterior over ``Z`` (mean-field: ``mean = loc``,
``precision = scale^-2``; full prior variance from the prior, 1 for non-centred priors),
applies a decision rule and returns the new masks, per-layer statistics and, optionally, the
reduced posterior in the non-centred coordinates the guide uses.

What is counted (:func:`sparsity`): every entry of every Bayesian layer's
``(rows, fan_in + 1)`` matrix, biases included, the classifier included (it is never pruned,
but it is part of the network). ``pruned_fraction`` counts the entries the rule pruned;
``dead_fraction`` adds, for networks whose layers feed each other in sequence (MLP and LeNet
variants), the weights that read a dead unit -- a unit whose whole row, bias included, is
pruned outputs a constant 0 (every activation here maps 0 to 0), so its outgoing weights are
dead too. Three compression ratios, named for what they count (METHOD.md 5):

- ``compression_alive``: all entries / entries still alive after dead-unit propagation. The
  exported network realises it where the export removes the dead units (``bmr-jax export``
  shrinks whole dead rows of sequential networks); elsewhere it is an upper bound;
- ``compression_by_mask``: all entries / entries the masks keep, no credit for dead units;
- ``weight_compression_by_mask``: weight entries (biases left out) / weight entries the masks
  keep -- the count of the Sparse VD paper (Molchanov et al. 2017, table 1) and of most
  pruning papers.

Records written before these names carry ``compression``, which is ``compression_alive``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bmr_jax.bayes.layers import LayerView
from bmr_jax.bayes.model import PRUNED_GAMMA
from bmr_jax.bayes.units import UnitLink
from bmr_jax.bmr.decide import Rule
from bmr_jax.bmr.delta_f import delta_f, delta_f_matrix_normal_columns, delta_f_matrix_normal_rows


def make_unit_reduce(view: LayerView, rule: Rule, prior_var: Mapping[str, float] | None = None,
                     heads: tuple[UnitLink, ...] = ()):  # fmt: skip
    """Structured BMR: ``reduce(posterior, masks, block) -> ReduceResult``, pure and jit-able,
    scoring the removal of whole output units (rows) of every layer in closed form from a
    matrix-normal posterior ``{layer: (M, u, V)}`` (row ``i`` of ``Z`` is ``N(M_i, u_i V)``;
    METHOD.md 4.3, :func:`delta_f_matrix_normal_rows`). ``rule`` decides over each layer's
    units, and every removed unit loses its whole row (weights and bias);
    ``ReduceResult.delta_f`` holds the per-unit Delta F. No reduced posterior is returned.

    ``heads``: attention heads (``bmr_jax.bayes.units`` links of kind ``"head"``: head ``h`` is
    the rows ``h * unit_rows + d`` of the query, key and value projections and the same
    columns of the output projection) scored as single units instead of their rows one by
    one: a head's Delta F is the sum of its rows' and of its output-projection columns'
    (:func:`delta_f_matrix_normal_columns`; the four matrices' posteriors are independent),
    decided under the label ``"<attention> heads"``, and a removed head loses its rows and
    those columns."""
    layers = [s.name for s in view.bayesian_layers]
    prunable = {s.name: s.prunable for s in view.bayesian_layers}
    prior_var = {name: 1.0 for name in layers} if prior_var is None else dict(prior_var)
    in_heads = {name for group in heads for name in group.producers}

    def reduce(posterior, masks, block):
        df = {}
        for name in layers:
            mean, row_var, col_cov = posterior[name]
            spike = jnp.zeros(mean.shape[0], mean.dtype)
            df[name] = delta_f_matrix_normal_rows(mean, row_var, col_cov, prior_var[name], spike)
        unit_df = {name: df[name] for name in layers if name not in in_heads}
        alive = {name: jnp.any(masks[name], axis=1) for name in unit_df}
        decides = {name: prunable[name] for name in unit_df}
        for group in heads:
            unit_df[group.label] = _head_delta_f(group, df, posterior[group.consumer],
                                                 prior_var[group.consumer])  # fmt: skip
            alive[group.label] = _heads_alive(group, masks)
            decides[group.label] = prunable[group.producers[0]]
        units, info = rule(unit_df, alive, decides, block)
        new_masks = {name: masks[name] & units[name][:, None] for name in layers
                     if name not in in_heads}  # fmt: skip
        for group in heads:
            keep = jnp.repeat(units[group.label], group.unit_rows)
            for name in group.producers:
                new_masks[name] = masks[name] & keep[:, None]
            columns = jnp.concatenate([keep, jnp.ones(new_masks[group.consumer].shape[1]
                                                      - keep.size, bool)])  # fmt: skip
            new_masks[group.consumer] = new_masks[group.consumer] & columns[None, :]
        return ReduceResult(new_masks, unit_df, info, None)

    return reduce


def _head_delta_f(group: UnitLink, row_df, out_posterior, out_prior_var):
    """``(heads,)`` Delta F of removing each head: its query/key/value rows and its columns of
    the output projection."""
    rows = sum(row_df[name] for name in group.producers)
    num_heads = rows.shape[0] // group.unit_rows
    per_head = rows.reshape(num_heads, group.unit_rows).sum(axis=1)
    mean, row_var, col_cov = out_posterior
    columns = [group.rows_of(h) for h in range(num_heads)]  # the output columns reading head h
    out = jnp.stack([delta_f_matrix_normal_columns(mean, row_var, col_cov, out_prior_var, c)
                     for c in columns])  # fmt: skip
    return per_head + out


def _heads_alive(group: UnitLink, masks):
    """A head is alive while any of its query, key or value rows is."""
    alive = sum(jnp.any(masks[name], axis=1).astype(jnp.int32) for name in group.producers) > 0
    return alive.reshape(-1, group.unit_rows).any(axis=1)


def noncentred_reduced_posterior(mean, precision, prior_var, reduced_var):
    """The reduced posterior of the non-centred ``Z`` once its multiplier becomes
    ``gamma = sqrt(g / s)``: ``Z' = Z~ / gamma`` with ``Z~ ~ q~`` from :func:`delta_f`, i.e.
    ``loc' = mu (pi / d) sqrt(g s)`` and ``precision' = d / s`` with ``d = 1 + g (pi - 1/s)``.
    A pruned weight (``g = 0``) returns to its prior ``N(0, s)``, a kept one (``g = s``) is
    unchanged."""
    g, s, pi, mu = reduced_var, prior_var, precision, mean
    d = 1.0 + g * (pi - 1.0 / s)
    return mu * (pi / d) * jnp.sqrt(g * s), d / s


@dataclass(frozen=True)
class ReduceResult:
    """Output of the reduce step (all pytrees of arrays)."""

    masks: dict  # {layer: bool (rows, cols)}, True = kept
    delta_f: dict  # {layer: (rows, cols)} Delta F of pruning each weight
    info: dict  # rule-specific, e.g. {"zeta": {layer: scalar}}
    reduced: dict | None  # {layer: (mean, precision)} non-centred reduced posterior, or None


def make_reduce(view: LayerView, rule: Rule, prior_var: Mapping[str, float] | None = None):
    """``reduce(posterior, masks, block, write_back=False) -> ReduceResult``, pure and
    jit-able (``write_back`` static).

    ``posterior`` is ``{layer: (mean, precision)}`` of ``Z`` (a mean-field guide's
    :meth:`~bmr_jax.bayes.guides.MeanFieldGuide.posterior`); with ``write_back`` the result holds
    each layer's reduced posterior ``(mean, precision)`` in the guide's non-centred
    coordinates (pruned weights back at their prior, kept ones unchanged).
    """
    layers = [s.name for s in view.bayesian_layers]
    prunable = {s.name: s.prunable for s in view.bayesian_layers}
    prior_var = {name: 1.0 for name in layers} if prior_var is None else dict(prior_var)

    def reduce(posterior, masks, block, write_back: bool = False):
        # METHOD.md 4.1: Delta F of the spike (reduced variance 0) for every weight
        df = {name: delta_f(*posterior[name], prior_var[name], 0.0)[0] for name in layers}
        new_masks, info = rule(df, masks, prunable, block)
        new_masks = {name: new_masks[name] & masks[name] for name in layers}  # permanent
        reduced = None
        if write_back:
            reduced = {}
            for name in layers:
                mean, precision = posterior[name]
                g = jnp.where(new_masks[name], prior_var[name], 0.0).astype(mean.dtype)
                reduced[name] = noncentred_reduced_posterior(mean, precision, prior_var[name], g)
        return ReduceResult(new_masks, df, info, reduced)

    return reduce


jax.tree_util.register_dataclass(
    ReduceResult, data_fields=["masks", "delta_f", "info", "reduced"], meta_fields=[]
)


def gamma_from_masks(masks: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Prior scale multipliers: 1 where kept, ``PRUNED_GAMMA`` (1e-12) where pruned."""
    return {k: jnp.where(m, 1.0, PRUNED_GAMMA).astype(jnp.result_type(float)) for k, m in
            masks.items()}  # fmt: skip


def propagate_dead_units(masks: Mapping[str, jax.Array], view: LayerView) -> dict:
    """Masks with the weights that read a dead unit removed, for a sequential network.

    A unit (row) is dead when its whole row, bias included, is pruned. The next layer's
    column ``k < fan_in`` reads unit ``k mod rows`` of the previous layer (dense after dense,
    NHWC-flattened features after a conv, and a conv's ``(kh, kw, in)`` fan-in all put the
    channel last). Dead units cascade forward.
    """
    out = dict(masks)
    xp = np if all(isinstance(m, np.ndarray) for m in masks.values()) else jnp
    specs = view.bayesian_layers
    for prev, spec in zip(specs[:-1], specs[1:], strict=True):
        if spec.fan_in % prev.rows:
            raise ValueError(f"{spec.name} does not read {prev.name}'s units in sequence")
        dead = ~xp.any(out[prev.name], axis=1)  # (prev.rows,)
        reads_dead = xp.tile(dead, spec.fan_in // prev.rows)
        if spec.has_bias:
            reads_dead = xp.concatenate([reads_dead, xp.zeros(1, bool)])
        out[spec.name] = out[spec.name] & ~reads_dead[None, :]
    return out


COMPRESSIONS = ("compression_alive", "compression_by_mask", "weight_compression_by_mask")


def record_compressions(record: Mapping) -> dict[str, float | None]:
    """The three compression counts of a metrics record (module docstring), older records
    too: their ``compression`` is ``compression_alive``, ``compression_by_mask`` is
    ``1 / (1 - pruned_fraction)``, and the weight count, which needs the masks, is ``None``."""
    if "compression_alive" in record:
        return {k: record[k] for k in COMPRESSIONS}
    by_mask = 1.0 / max(1.0 - record["pruned_fraction"], 1e-300)
    return {"compression_alive": record["compression"], "compression_by_mask": by_mask,
            "weight_compression_by_mask": None}  # fmt: skip


def sparsity(masks: Mapping[str, jax.Array], view: LayerView, sequential: bool) -> dict:
    """Pruned fraction per layer and in total, dead-unit fraction and compression ratios.

    Returns a dict: ``pruned_fraction``, ``dead_fraction`` (pruned + dead, equal to
    ``pruned_fraction`` for non-sequential networks), ``compression_alive``,
    ``compression_by_mask``, ``weight_compression_by_mask`` (module docstring),
    ``layers: {layer: pruned fraction}`` and ``rows: {layer: units alive}``.
    """
    masks = {k: np.asarray(m) for k, m in masks.items()}  # counted on the host, in numpy
    effective = propagate_dead_units(masks, view) if sequential else dict(masks)
    total = sum(int(m.size) for m in masks.values())
    kept = sum(int(np.sum(m)) for m in masks.values())
    alive = sum(int(np.sum(m)) for m in effective.values())
    has_bias = {s.name: s.has_bias for s in view.layers}
    weights = {k: m[:, :-1] if has_bias[k] else m for k, m in masks.items()}
    kept_weights = sum(int(np.sum(m)) for m in weights.values())
    return {
        "pruned_fraction": 1.0 - kept / total,
        "dead_fraction": 1.0 - alive / total,
        "compression_alive": total / max(alive, 1),
        "compression_by_mask": total / max(kept, 1),
        "weight_compression_by_mask": sum(m.size for m in weights.values())
        / max(kept_weights, 1),
        "layers": {k: 1.0 - float(np.mean(m)) for k, m in masks.items()},
        "rows": {k: int(np.sum(np.any(m, axis=1))) for k, m in effective.items()},
    }
