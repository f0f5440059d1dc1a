"""Decision rules: which weights to prune given their Delta F (METHOD.md section 4.4).

A rule maps ``{layer: delta_f}`` and the current ``{layer: alive}`` masks to new masks. Rules
are small frozen dataclasses (hashable, so a jitted reduce step takes them as static
arguments) and never resurrect a pruned weight: the new mask is always ``alive & keep``.
Layers that are not prunable (the classifier) are returned unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from bmr_jax.registry import Registry

RATE_OVER = ("all", "layer", "alive")  # which entries the inclusion rate counts


def spike_and_slab(delta_f, alive, *, a0=1.0, b0=1.0, iterations=4, rate_over="layer"):
    """The reference rule for one layer: spike-and-slab with a learned inclusion rate.

    ``zeta = psi(a0) - psi(b0)``; repeat ``iterations`` times:
    ``q_k = sigmoid(zeta - DeltaF_k)``, ``a = a0 + sum q``, ``b = b0 + sum (1 - q)``,
    ``zeta = psi(a) - psi(b)``; keep ``k`` iff ``DeltaF_k <= zeta`` (METHOD.md 4.4.1).

    Which weights the sums run over once some are pruned (``rate_over``):

    - ``"all"`` (the reference code, METHOD.md 4.7): every entry of the layer with its current
      Delta F, pruned ones included. A pruned entry's posterior relaxes towards ``N(0, 1)``, so
      its Delta F tends to 0 and it votes ``q = sigmoid(zeta)``.
    - ``"layer"``: every entry of the layer, the pruned ones as excluded (``q_k = 0``): the
      prior odds against a weight grow as the layer empties, and pruning ratchets.
    - ``"alive"``: the weights still alive only: the rate among the survivors, which prunes
      far less once a layer is sparse (BENCHMARKS.md compares it with ``layer``).

    Returns:
      ``(keep, zeta)``: the new mask (``alive & keep``) and the final log-odds ``zeta``.
    """
    if rate_over not in RATE_OVER:
        raise ValueError(f"rate_over must be one of {', '.join(RATE_OVER)}, got {rate_over!r}")
    alive_f = alive.astype(delta_f.dtype)
    voting = jnp.ones_like(alive_f) if rate_over == "all" else alive_f  # whose q is counted
    n = jnp.sum(alive_f) if rate_over == "alive" else jnp.asarray(alive.size, delta_f.dtype)
    zeta = digamma(jnp.asarray(a0, delta_f.dtype)) - digamma(jnp.asarray(b0, delta_f.dtype))
    for _ in range(iterations):  # a fixed, small number: unrolled
        q = jax.nn.sigmoid(zeta - delta_f) * voting
        included = jnp.sum(q)
        zeta = digamma(a0 + included) - digamma(b0 + n - included)
    return alive & (delta_f <= zeta), zeta


class Rule:
    """Base class: ``rule(delta_f, alive, prunable, block) -> (masks, info)``."""

    name = "rule"

    def __call__(self, delta_f, alive, prunable: Mapping[str, bool], block: int):
        raise NotImplementedError


@dataclass(frozen=True)
class SpikeAndSlab(Rule):
    """:func:`spike_and_slab` on every prunable layer; ``info["zeta"]`` per layer."""

    a0: float = 1.0
    b0: float = 1.0
    iterations: int = 4
    rate_over: str = "layer"  # or "all" (the reference code's), "alive": see spike_and_slab
    name = "spike_and_slab"

    def __call__(self, delta_f, alive, prunable, block):
        masks, zetas = {}, {}
        for layer, df in delta_f.items():
            if prunable[layer]:
                masks[layer], zetas[layer] = spike_and_slab(
                    df,
                    alive[layer],
                    a0=self.a0,
                    b0=self.b0,
                    iterations=self.iterations,
                    rate_over=self.rate_over,
                )
            else:
                masks[layer] = alive[layer]
        return masks, {"zeta": zetas}


@dataclass(frozen=True)
class Evidence(Rule):
    """The plain evidence rule: prune iff ``Delta F > threshold`` (0: the reduced model has
    more evidence)."""

    threshold: float = 0.0
    name = "evidence"

    def __call__(self, delta_f, alive, prunable, block):
        masks = {
            layer: alive[layer] & (df <= self.threshold) if prunable[layer] else alive[layer]
            for layer, df in delta_f.items()
        }
        return masks, {}


@dataclass(frozen=True)
class PolynomialSchedule:
    """Target sparsity rising from ``initial`` at ``begin`` to ``final`` at ``end`` (blocks) as
    ``final + (initial - final) (1 - t)^power`` (Zhu & Gupta 2017; JaxPruner's schedule)."""

    final: float
    initial: float = 0.0
    begin: int = 1
    end: int = 1
    power: float = 3.0

    def __call__(self, block):
        """The target at ``block`` (a Python int or a traced integer)."""
        span = max(self.end - self.begin, 1)
        t = jnp.clip((block - self.begin) / span, 0.0, 1.0)
        target = self.final + (self.initial - self.final) * (1.0 - t) ** self.power
        return jnp.where(block < self.begin, 0.0, target)


def _prune_top(scores, alive, fraction):
    """Mask keeping all but the ``ceil(fraction * size)`` highest-scoring entries; pruned
    entries rank first (score +inf), so they stay pruned and count towards the target.
    ``fraction`` may be traced: the cut is a comparison of ranks, not a slice."""
    flat = jnp.where(alive, scores, jnp.inf).ravel()
    rank = (
        jnp.empty(flat.shape, jnp.int32)
        .at[jnp.argsort(-flat)]
        .set(jnp.arange(flat.size, dtype=jnp.int32))
    )  # 0 = highest score
    count = jnp.ceil(fraction * flat.size)
    return alive & ~(rank < count).reshape(alive.shape)


@dataclass(frozen=True)
class TargetSparsity(Rule):
    """Prune the highest-Delta F weights until a target fraction is pruned.

    Attributes:
      schedule: the target pruned fraction per block (a :class:`PolynomialSchedule`, or a
        mapping of its fields; default 0.9 reached at block 10, rising from block 2).
      scope: ``"layer"`` (each prunable layer reaches the target) or ``"global"`` (the target
        holds over all prunable layers together).
    """

    schedule: PolynomialSchedule = PolynomialSchedule(final=0.9, begin=2, end=10)
    scope: str = "layer"
    name = "target"

    def __post_init__(self):  # a schedule given as a mapping (a config's rule_options)
        if isinstance(self.schedule, Mapping):
            object.__setattr__(self, "schedule", PolynomialSchedule(**self.schedule))

    def __call__(self, delta_f, alive, prunable, block):
        target = self.schedule(block)
        layers = [layer for layer in delta_f if prunable[layer]]
        masks = {layer: alive[layer] for layer in delta_f}
        if self.scope == "layer":
            for layer in layers:
                masks[layer] = _prune_top(delta_f[layer], alive[layer], target)
        elif self.scope == "global":
            scores = jnp.concatenate([delta_f[layer].ravel() for layer in layers])
            live = jnp.concatenate([alive[layer].ravel() for layer in layers])
            kept = _prune_top(scores, live, target)
            start = 0
            for layer in layers:
                size = delta_f[layer].size
                masks[layer] = kept[start : start + size].reshape(delta_f[layer].shape)
                start += size
        else:
            raise ValueError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        return masks, {"target": target}


@dataclass(frozen=True)
class UnitSpikeAndSlab(Rule):
    """Prune whole units (rows) under a group spike-and-slab prior: with probability ``rho``
    a unit's whole row is 0, else it keeps the full prior (``bmr_jax.bmr.RowSpikeAndSlab``
    with the slab equal to the full prior). The row's spike evidence is the sum of its
    weights' spike Delta F (mean-field posterior), so the posterior log-odds of the spike are
    ``ln(rho / (1 - rho)) + sum_k DeltaF_k`` and a unit is pruned when they are positive.
    Already pruned weights count with Delta F 0 (their prior is the spike already)."""

    rho: float = 0.5
    name = "unit_spike_and_slab"

    def __call__(self, delta_f, alive, prunable, block):
        prior_log_odds = jnp.log(self.rho) - jnp.log1p(-self.rho)
        masks, log_odds = {}, {}
        for layer, df in delta_f.items():
            if not prunable[layer]:
                masks[layer] = alive[layer]
                continue
            row = prior_log_odds + jnp.sum(jnp.where(alive[layer], df, 0.0), axis=1)
            log_odds[layer] = row
            masks[layer] = alive[layer] & (row <= 0)[:, None]
        return masks, {"unit_log_odds": log_odds}


RULES: Registry[type[Rule]] = Registry("decision rule")
for _rule in (SpikeAndSlab, Evidence, TargetSparsity, UnitSpikeAndSlab):
    RULES.register(_rule.name, _rule)
