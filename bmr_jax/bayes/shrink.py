"""Removing the units a pruned network no longer needs, exactly (the core of the export).

With the run's masks applied (pruned entries exactly zero), a unit of a :class:`UnitLink` is
removed when removing it cannot change the network's output:

- **unread**: every consumer column reading it is pruned;
- **zero**: every row of its source, bias included, is pruned, so it outputs
  ``activation(0) = 0`` (a head whose value rows are pruned outputs zero whatever its
  attention weights);
- **constant** (``fold_constants``, point weights only): its source rows keep only their
  biases, so it outputs the constant ``c = activation(b)`` at every position; the consumer
  then receives ``sum_p W[:, col(p)] c``, which is added to the consumer's bias
  (``foldable`` links only). Under a posterior ``b`` is random and the product does not fold,
  so the posterior export leaves these units in.

Removing a unit clears the consumer's columns that read it, which may leave a consumer unit
with nothing but its bias, or a producer of an earlier link unread: the rules are applied
until nothing changes. Every link keeps at least one unit (a zero one if all could go), so
every exported layer has a width of at least one.

``pad`` puts removed units back, the lowest-numbered first, until a link keeps
``pad(kept, total)`` units. That is exact too (a removed unit's rows and the columns reading it
are zero in the result), and it lets many masks share one network shape, hence one
compilation (:mod:`bmr_jax.inference.shrunk`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from bmr_jax.bayes.layers import LayerView
from bmr_jax.bayes.units import UnitLink


@dataclass(frozen=True)
class Shrunk:
    """The result of :func:`shrink`.

    Attributes:
      matrices: ``{layer: (rows', cols')}`` the kept rows and columns (bias column last),
        pruned entries zero, constants folded into the biases.
      masks: ``{layer: (rows', cols')}`` which entries are still weights.
      rows, cols: ``{layer: indices}`` of the original rows and columns kept (``cols``
        includes the bias column).
      units: ``{link label: (units before, units after)}``.
      scales: ``{layer: (rows', cols')}`` the posterior standard deviations kept, if given.
    """

    matrices: dict
    masks: dict
    rows: dict
    cols: dict
    units: dict
    scales: dict | None = None


def shrink(view: LayerView, links: list[UnitLink], matrices: Mapping[str, np.ndarray],
           masks: Mapping[str, np.ndarray], *, scales: Mapping[str, np.ndarray] | None = None,
           fold_constants: bool = True,
           pad: Callable[[int, int], int] | None = None) -> Shrunk:  # fmt: skip
    """Removes every unit the rules above allow from the layer matrices of ``view``.

    Args:
      matrices: ``{layer: (rows, cols)}`` weights (every layer of ``view``); masks: the same
        shapes, True = kept (layers without a mask are dense).
      scales: posterior standard deviations of the weights, which are then kept alongside;
        give them with ``fold_constants=False`` (a folded bias has no Gaussian posterior).
      pad: ``pad(kept, total) -> units`` to keep per link, at least ``kept`` (module
        docstring); ``None`` keeps only the units the rules leave.
    """
    if scales is not None and fold_constants:
        raise ValueError("shrink: constants cannot be folded under a posterior (fold_constants"
                         "=False with scales)")  # fmt: skip
    specs = {s.name: s for s in view.layers}
    mask = {n: np.ones(s.shape, bool) if n not in masks else np.asarray(masks[n], bool).copy()
            for n, s in specs.items()}  # fmt: skip
    weight = {n: np.where(mask[n], np.asarray(matrices[n], np.float32), 0).astype(np.float32)
              for n in specs}  # fmt: skip
    removed = [np.zeros(link.count(specs[link.source].rows), bool) for link in links]
    changed = True
    while changed:
        changed = False
        for link, gone in zip(links, removed, strict=True):
            for unit in np.flatnonzero(~gone):
                if _try_remove(link, unit, specs, weight, mask, fold_constants):
                    gone[unit] = True
                    changed = True
    if pad is not None:
        removed = [_put_back(gone, pad) for gone in removed]
    return _compact(view, links, removed, weight, mask, scales)


def _put_back(gone: np.ndarray, pad: Callable[[int, int], int]) -> np.ndarray:
    """``gone`` with its lowest-numbered removed units kept again, up to ``pad(kept, total)``
    kept units."""
    kept = int((~gone).sum())
    target = min(max(pad(kept, len(gone)), kept), len(gone))
    back = np.flatnonzero(gone)[: target - kept]
    gone = gone.copy()
    gone[back] = False
    return gone


def _try_remove(link: UnitLink, unit: int, specs, weight, mask, fold: bool) -> bool:
    """Removes ``unit`` of ``link`` if a rule allows it (updating ``weight`` and ``mask`` in
    place); whether it did."""
    rows = link.rows_of(unit)
    source, consumer = specs[link.source], specs[link.consumer]
    cols = link.columns_of(unit, source.rows, consumer.fan_in)
    source_mask = mask[link.source][rows]
    unread = not mask[link.consumer][:, cols].any()
    zero = not source_mask.any()
    constant = (fold and link.foldable and source.has_bias and consumer.has_bias
                and not source_mask[:, : source.fan_in].any())  # fmt: skip
    if not (unread or zero or constant):
        return False
    if constant and not (unread or zero):
        _fold(link, rows, cols, source, weight, mask)
    for name in link.producers:
        mask[name][rows] = False
        weight[name][rows] = 0.0
    mask[link.consumer][:, cols] = False
    weight[link.consumer][:, cols] = 0.0
    return True


def _fold(link: UnitLink, rows, cols, source, weight, mask) -> None:
    """Adds the constant unit's contribution ``sum_p W[:, col(p, r)] activation(b_r)`` to the
    consumer's bias column."""
    bias = weight[link.source][rows, source.fan_in]  # (unit_rows,)
    constant = np.asarray(link.activation(bias), np.float32)
    consumer = weight[link.consumer]
    reads = consumer[:, cols].reshape(consumer.shape[0], -1, len(rows))  # (out, positions, r)
    added = np.einsum("opr,r->o", reads, constant).astype(np.float32)
    consumer[:, -1] += added
    mask[link.consumer][:, -1] |= added != 0


def _compact(view: LayerView, links, removed, weight, mask, scales) -> Shrunk:
    """Drops the removed rows and columns (keeping one unit of a link that lost them all)."""
    specs = {s.name: s for s in view.layers}
    drop_rows = {n: np.zeros(s.rows, bool) for n, s in specs.items()}
    drop_cols = {n: np.zeros(s.cols, bool) for n, s in specs.items()}
    units = {}
    for link, gone in zip(links, removed, strict=True):
        gone = gone.copy()
        if gone.all():
            gone[0] = False  # a zero unit keeps the layer's width at one
        source = specs[link.source]
        for unit in np.flatnonzero(gone):
            rows = link.rows_of(unit)
            for name in link.producers:
                drop_rows[name][rows] = True
            drop_cols[link.consumer][link.columns_of(unit, source.rows,
                                                     specs[link.consumer].fan_in)] = True
        units[link.label] = (len(gone), int((~gone).sum()))
    keep_rows = {n: np.flatnonzero(~d) for n, d in drop_rows.items()}
    keep_cols = {n: np.flatnonzero(~d) for n, d in drop_cols.items()}

    def take(arrays):
        return {n: arrays[n][np.ix_(keep_rows[n], keep_cols[n])] for n in specs}

    kept_scales = None
    if scales is not None:
        kept_scales = take({n: np.where(mask[n], np.asarray(scales[n], np.float32), 0)
                            .astype(np.float32) if n in scales else np.zeros(specs[n].shape,
                                                                             np.float32)
                            for n in specs})  # fmt: skip
    return Shrunk(take(weight), take(mask), keep_rows, keep_cols, units, kept_scales)
