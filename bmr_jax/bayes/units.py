"""Which rows of a network feed which columns: the units an export may remove.

A *unit* is a group of rows of one or more producer layers (the layer view's ``(rows, cols)``
matrices, METHOD.md section 2) whose output is read by a set of columns of one consumer layer:

- in a sequential network (MLP, LeNet variants) every hidden row of layer ``l`` is a unit read
  by layer ``l + 1``; flattening is channel-last, so unit ``j`` of ``R`` rows is read by the
  columns ``p * R + j`` for every position ``p`` (kernel offsets of a convolution, spatial
  positions after a flatten);
- in a feed-forward block of the ViT or Mixer (``fc1 -> GELU -> fc2``) every hidden unit of
  ``fc1`` is read by one column of ``fc2``;
- in multi-head attention head ``h`` is the ``head_dim`` rows ``h * head_dim + d`` of the
  query, key and value projections, read by the same columns of the output projection.

Residual streams (patch embedding, ``fc2`` and output-projection rows of the ViT/Mixer) are not
units: every block reads and writes them, and LayerNorm mixes their channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bmr_jax.bayes.layers import LayerView
from bmr_jax.nets.vit import FeedForward


def _identity(x):
    return x


@dataclass(frozen=True)
class UnitLink:
    """Units made of rows of ``producers``, read by columns of ``consumer``.

    Attributes:
      producers: the layers whose rows make the units (one layer; for an attention head the
        query, key and value projections).
      consumer: the layer whose columns read the units.
      unit_rows: rows per unit in every producer (``head_dim`` for heads, else 1).
      source: the producer whose rows are the unit's output before ``activation`` (the layer
        itself; the value projection for heads): when its rows are all zero, the unit outputs
        zero, and when only their biases are left, it outputs a constant.
      activation: the non-linearity between ``source`` and ``consumer`` (identity for a head:
        attention averages the values with weights that sum to one, so a constant value row
        gives that constant); it must map 0 to 0.
      foldable: a constant output may be folded into the consumer's bias: the map between the
        two is the same at every position (valid convolutions, pooling of a constant).
      kind: ``"unit"`` or ``"head"`` (for reports).
    """

    producers: tuple[str, ...]
    consumer: str
    unit_rows: int
    source: str
    activation: Callable = _identity
    foldable: bool = True
    kind: str = "unit"

    @property
    def label(self) -> str:
        if self.kind == "head":
            return self.source.rsplit(".", 1)[0] + " heads"
        return f"{self.source} units"

    def count(self, rows: int) -> int:
        """Number of units given the producers' row count."""
        return rows // self.unit_rows

    def rows_of(self, unit: int) -> np.ndarray:
        return np.arange(unit * self.unit_rows, (unit + 1) * self.unit_rows)

    def columns_of(self, unit: int, rows: int, fan_in: int) -> np.ndarray:
        """The consumer's columns (bias excluded) that read ``unit``: ``p * rows + r`` for
        every position ``p < fan_in / rows`` and every row ``r`` of the unit."""
        positions = np.arange(fan_in // rows)[:, None] * rows
        return (positions + self.rows_of(unit)[None, :]).reshape(-1)


def unit_links(module: nnx.Module, view: LayerView, *, sequential: bool,
               activation: Callable | None = None) -> list[UnitLink]:  # fmt: skip
    """The units of ``module`` (see the module docstring), in the order of the forward pass.

    ``sequential``: the network's weight layers read each other in sequence (the registry's
    ``NetSpec.sequential``); otherwise the links are found by module type (FeedForward and
    MultiHeadAttention), and any other unit is kept.

    ``activation``: the non-linearity between a sequential network's layers (it must map 0
    to 0); default: the module's ``activation`` attribute (this library's networks), or, in
    an ``nnx.Sequential``, the plain functions between two weight layers composed (a gap
    holding a module, or a function that does not act on a scalar, links nothing).
    """
    if sequential:
        return _sequential_links(module, view, activation)
    modules = dict(nnx.iter_modules(module))
    layer_names = set(view.names())
    links = []
    for path, sub in modules.items():
        name = ".".join(map(str, path))
        if isinstance(sub, FeedForward) and {f"{name}.fc1", f"{name}.fc2"} <= layer_names:
            links.append(UnitLink((f"{name}.fc1",), f"{name}.fc2", 1, f"{name}.fc1", nnx.gelu))
        elif isinstance(sub, nnx.MultiHeadAttention) and _plain_attention(sub):
            q, k, v, o = (f"{name}.{p}" for p in ("query", "key", "value", "out"))
            links.append(UnitLink((q, k, v), o, sub.head_dim, v, kind="head"))
    order = {name: i for i, name in enumerate(view.names())}
    return sorted(links, key=lambda link: order[link.consumer])


def _plain_attention(attention: nnx.MultiHeadAttention) -> bool:
    """Self-attention with one key/value head per query head and no q/k normalisation."""
    return (not attention.normalize_qk and attention.num_kv_heads == attention.num_heads
            and attention.use_bias)  # fmt: skip


def _sequential_links(module: nnx.Module, view: LayerView,
                      activation: Callable | None) -> list[UnitLink]:  # fmt: skip
    modules = dict(nnx.iter_modules(module))
    activation = activation or getattr(module, "activation", None)
    links = []
    for producer, consumer in zip(view.layers[:-1], view.layers[1:], strict=True):
        between = activation or _sequential_gap(module, producer.path, consumer.path)
        if between is None or not _zero_to_zero(between):
            continue
        if consumer.fan_in % producer.rows:
            continue  # the consumer does not read the producer's units in sequence
        foldable = _position_free(modules[consumer.path])
        links.append(UnitLink((producer.name,), consumer.name, 1, producer.name, between,
                              foldable))  # fmt: skip
    return links


def _sequential_gap(module: nnx.Module, producer: tuple, consumer: tuple) -> Callable | None:
    """The plain functions an ``nnx.Sequential`` applies between two of its weight layers,
    composed; ``None`` when ``module`` is no ``nnx.Sequential`` or the gap holds a module."""
    if not isinstance(module, nnx.Sequential) or producer[:-1] != consumer[:-1]:
        return None
    if len(producer) != 2 or producer[0] != "layers":
        return None
    gap = list(module.layers)[producer[1] + 1 : consumer[1]]
    if any(isinstance(f, nnx.Module) or not callable(f) for f in gap):
        return None

    def composed(x):
        for f in gap:
            x = f(x)
        return x

    return composed


def _zero_to_zero(activation: Callable) -> bool:
    """``activation(0) == 0`` on a scalar (a reshape or a pooling fails on one: ``False``)."""
    try:
        return float(activation(jnp.zeros(()))) == 0.0
    except Exception:  # any function that is not elementwise
        return False


def _position_free(consumer) -> bool:
    """A constant input contributes the same to every output of ``consumer``: dense layers,
    and convolutions without padding (a padded border would see zeros instead)."""
    if isinstance(consumer, nnx.Conv):
        return consumer.padding == "VALID"
    return isinstance(consumer, nnx.Linear)


@dataclass(frozen=True)
class UnitGeometry:
    """Where a link's units sit in its layers' matrices.

    Attributes:
      link: the producers, the consumer and the rows per unit.
      rows: rows of every producer (``units * unit_rows``).
      positions: how many times the consumer reads each producer row (``fan_in / rows``:
        the kernel offsets of a convolution, the pixels a flatten lays out; 1 for a dense or
        an output projection); column ``p * rows + r`` reads row ``r``.
      consumer_bias: the consumer has a bias column (last; it reads no unit).
    """

    link: UnitLink
    rows: int
    positions: int
    consumer_bias: bool

    @property
    def label(self) -> str:
        return self.link.label

    @property
    def units(self) -> int:
        return self.rows // self.link.unit_rows

    def row_sums(self, entries: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
        """``(units,)``: each unit's sum of ``entries`` over its producer rows."""
        rows = sum(jnp.sum(entries[name], axis=1) for name in self.link.producers)
        return rows.reshape(self.units, self.link.unit_rows).sum(axis=1)

    def column_sums(self, consumer_entries: jnp.ndarray) -> jnp.ndarray:
        """``(units,)``: each unit's sum of the consumer's ``entries`` over the columns that
        read it."""
        columns = jnp.sum(consumer_entries, axis=0)[: self.positions * self.rows]
        per_row = columns.reshape(self.positions, self.rows).sum(axis=0)
        return per_row.reshape(self.units, self.link.unit_rows).sum(axis=1)

    def alive(self, masks: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
        """``(units,)`` bool: a unit is alive while any entry of its producer rows is."""
        rows = sum(jnp.any(masks[name], axis=1).astype(jnp.int32) for name in self.link.producers)
        return (rows > 0).reshape(self.units, self.link.unit_rows).any(axis=1)

    def remove(self, masks: Mapping[str, jnp.ndarray], keep: jnp.ndarray) -> dict:
        """``masks`` with the rows and the reading columns of every unit not in ``keep``
        pruned (``keep``: ``(units,)`` bool)."""
        out = dict(masks)
        rows = jnp.repeat(keep, self.link.unit_rows)
        for name in self.link.producers:
            out[name] = out[name] & rows[:, None]
        columns = jnp.tile(rows, self.positions)
        if self.consumer_bias:
            columns = jnp.concatenate([columns, jnp.ones(1, bool)])
        out[self.link.consumer] = out[self.link.consumer] & columns[None, :]
        return out


def unit_geometries(view: LayerView, links) -> tuple[UnitGeometry, ...]:
    """The geometry of every link whose producers BMR may prune, in forward order."""
    specs = {s.name: s for s in view.layers}
    out = []
    for link in links:
        producer, consumer = specs[link.producers[0]], specs[link.consumer]
        if not all(specs[name].prunable for name in link.producers):
            continue
        out.append(UnitGeometry(link, producer.rows, consumer.fan_in // producer.rows,
                                consumer.has_bias))  # fmt: skip
    return tuple(out)


def network_units(bnet, *, sequential: bool) -> tuple[UnitGeometry, ...]:
    """The geometries of a ``BayesianNetwork``'s removable units (its module's links)."""
    links = unit_links(bnet.initial_module(), bnet.view, sequential=sequential)
    return unit_geometries(bnet.view, links)
