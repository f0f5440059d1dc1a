"""Pruning as an optax wrapper: masks live in the optimiser state and are applied after every
update (the shape of JaxPruner, Lee et al. 2023), with a score function and a sparsity schedule.

    optimizer = pruning.prune_by_score(
        optax.adam(1e-3),
        score=pruning.magnitude,                      # higher score = keep
        schedule=PolynomialSchedule(final=0.95, begin=1, end=30),
        every=500,                                    # re-rank every 500 steps
        prunable=pruning.kernels_and_biases_except(["head"]),
    )
    optimizer = pruning.bmr_pruning(ivon(0.1, ess=60_000), every=500)   # BMR, any model

Every ``every`` steps the prunable entries are ranked globally (across layers) by score and the
lowest ``schedule(step // every)`` fraction is masked; a pruned entry stays pruned. The params
that come out of ``optax.apply_updates`` are exactly zero where masked, so the network is the
pruned network at every step (no separate masking pass). With ``score=magnitude`` and the
polynomial schedule this is gradual magnitude pruning (Zhu & Gupta 2017), the classic baseline
(Han et al. 2015) that BMR is compared against in ``scripts/bench_anchors.py``.
:func:`bmr_pruning` makes the masks by Bayesian model reduction instead, from the diagonal
Gaussian posterior of the :mod:`bmr_jax.inference.ivon` optimiser, so any Flax or Equinox model
can be pruned by BMR without NumPyro.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class PruningState(NamedTuple):
    inner: optax.OptState
    masks: Any  # bool pytree like the params (all True on leaves that are not prunable)
    count: jax.Array  # updates applied so far


def magnitude(params):
    """Score of each entry: its absolute value (Han et al. 2015)."""
    return jax.tree.map(jnp.abs, params)


def _path_name(path) -> str:
    """Dotted name of a pytree path (``hidden.0.kernel``; an ``nnx.Variable``'s ``.value`` is
    dropped)."""
    name = ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path)  # fmt: skip
    return name.removesuffix(".value")


def weight_matrices(name: str, leaf) -> bool:
    """The default predicate: every leaf with two or more dimensions (kernels, not biases)."""
    return jnp.ndim(leaf) >= 2


WEIGHT_NAMES = ("kernel", "weight")  # Flax's and Equinox's (and PyTorch-style) weight leaves


def kernels_and_biases_except(excluded: Iterable[str] = ()) -> Callable[[str, jax.Array], bool]:
    """Predicate: every weight (``kernel`` in Flax, ``weight`` in Equinox) and ``bias`` leaf
    whose dotted path does not start with one of ``excluded`` (e.g. the classifier head,
    which BMR does not prune either)."""
    excluded = tuple(excluded)

    def prunable(name: str, leaf) -> bool:
        last = name.rsplit(".", 1)[-1]
        kept = any(name == e or name.startswith(e + ".") for e in excluded)
        return last in (*WEIGHT_NAMES, "bias") and not kept

    return prunable


def check_selects_weights(params, prunable) -> None:
    """ValueError unless ``prunable`` selects at least one leaf of two or more dimensions: a
    predicate that matches only biases (or nothing) would prune little and report a share of
    what it selected as if it were the network's."""
    named = jax.tree_util.tree_leaves_with_path(params)
    chosen = [(_path_name(p), x) for p, x in named if prunable(_path_name(p), x)]
    if not any(jnp.ndim(x) >= 2 for _, x in chosen):
        seen = ", ".join(sorted({_path_name(p).rsplit(".", 1)[-1] for p, _ in named}))
        raise ValueError(f"the prunable predicate selects no weight matrix (it selects "
                         f"{len(chosen)} leaves, none with 2 or more dimensions; the leaf names "
                         f"are: {seen})")  # fmt: skip


def _prunable_tree(params, prunable):
    return jax.tree_util.tree_map_with_path(lambda p, x: prunable(_path_name(p), x), params)


def global_masks(scores, alive, selected, fraction):
    """Masks keeping all but the lowest-scoring ``ceil(fraction * n)`` of the ``n`` selected
    entries, ranked across every leaf at once; entries already pruned rank lowest, so they stay
    pruned and count towards the fraction. ``fraction`` may be traced."""
    leaves, treedef = jax.tree.flatten(scores)
    alive_leaves = treedef.flatten_up_to(alive)
    chosen = [bool(s) for s in treedef.flatten_up_to(selected)]
    pool = [jnp.where(a, s, -jnp.inf).ravel()
            for s, a, c in zip(leaves, alive_leaves, chosen, strict=True) if c]  # fmt: skip
    if not pool:
        return alive
    flat = jnp.concatenate(pool)
    rank = (
        jnp.empty(flat.shape, jnp.int32)
        .at[jnp.argsort(flat)]
        .set(jnp.arange(flat.size, dtype=jnp.int32))
    )  # 0 = lowest score
    keep = rank >= jnp.ceil(fraction * flat.size)
    out, start = [], 0
    for s, a, c in zip(leaves, alive_leaves, chosen, strict=True):
        if c:
            out.append(keep[start : start + s.size].reshape(s.shape) & a)
            start += s.size
        else:
            out.append(a)
    return treedef.unflatten(out)


def prune(
    inner: optax.GradientTransformation,
    *,
    masks_fn: Callable,
    every: int,
    prunable: Callable[[str, jax.Array], bool] | None = None,
) -> optax.GradientTransformation:
    """Wraps ``inner`` so that its parameters stay pruned: after every ``every``-th update,
    ``masks_fn(params, inner_state, alive, selected, count)`` gives the new masks (``alive``:
    the current ones; ``selected``: which leaves may be pruned; ``count``: updates so far),
    and masked entries are set to exactly zero after every update.

    ``prunable``: ``(dotted path, leaf) -> bool``; default: every leaf with ``ndim >= 2``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    prunable = prunable or weight_matrices

    def init(params):
        check_selects_weights(params, prunable)
        masks = jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params)
        return PruningState(inner.init(params), masks, jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("pruning needs params in update()")
        updates, inner_state = inner.update(updates, state.inner, params)
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1
        selected = _prunable_tree(params, prunable)
        masks = jax.lax.cond(
            count % every == 0,
            lambda: masks_fn(new_params, inner_state, state.masks, selected, count),
            lambda: state.masks,
        )
        masked = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), new_params, masks)
        updates = jax.tree.map(lambda new, old: new - old, masked, params)
        return updates, PruningState(inner_state, masks, count)

    return optax.GradientTransformation(init, update)


def prune_by_score(
    inner: optax.GradientTransformation,
    *,
    score: Callable[[Any], Any],
    schedule: Callable[[jax.Array], jax.Array],
    every: int,
    prunable: Callable[[str, jax.Array], bool] | None = None,
) -> optax.GradientTransformation:
    """:func:`prune` ranking the prunable entries globally by ``score(params)`` (same tree;
    higher = keep, e.g. :func:`magnitude`) and masking the lowest ``schedule(count // every)``
    fraction (e.g. ``bmr_jax.bmr.PolynomialSchedule`` in units of ``every`` updates)."""

    def masks_fn(params, inner_state, alive, selected, count):
        return global_masks(score(params), alive, selected, schedule(count // every))

    return prune(inner, masks_fn=masks_fn, every=every, prunable=prunable)


def bmr_delta_f(params, inner_state):
    """Delta F of the spike (METHOD.md 4.1) for every parameter, from the diagonal Gaussian
    posterior an :func:`bmr_jax.inference.ivon.ivon` optimiser keeps (its state, possibly
    nested)."""
    from bmr_jax.bmr import delta_f_spike
    from bmr_jax.inference.ivon import posterior

    post = posterior(params, inner_state)
    return jax.tree.map(lambda m, pi: delta_f_spike(m, pi, post.prior_var)[0], post.mean,
                        post.precision)  # fmt: skip


def bmr_pruning(
    inner: optax.GradientTransformation,
    *,
    every: int,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    prunable: Callable[[str, jax.Array], bool] | None = None,
) -> optax.GradientTransformation:
    """Bayesian model reduction for any model trained with IVON (``inner`` must hold an
    :func:`bmr_jax.inference.ivon.ivon` state). Every ``every`` updates each prunable leaf is
    reduced by the spike-and-slab rule with a learned inclusion rate (METHOD.md 4.4.1) on the
    closed-form Delta F of the spike under IVON's posterior; or, with a ``schedule``, the
    entries with the largest Delta F are pruned to the scheduled fraction (ranked globally),
    which is what a comparison at equal sparsity needs.
    """

    def masks_fn(params, inner_state, alive, selected, count):
        fraction = None if schedule is None else schedule(count // every)
        return masks_from_delta_f(bmr_delta_f(params, inner_state), alive, selected, fraction)

    return prune(inner, masks_fn=masks_fn, every=every, prunable=prunable)


def masks_from_delta_f(delta_f, alive, selected, fraction=None):
    """Masks from a pytree of Delta F: each selected leaf by the spike-and-slab rule with a
    learned inclusion rate (METHOD.md 4.4.1), or, with ``fraction``, the entries of largest
    Delta F pruned to that fraction, ranked across all selected leaves (:func:`global_masks`).
    Leaves not selected keep ``alive``."""
    from bmr_jax.bmr import spike_and_slab

    if fraction is not None:
        return global_masks(jax.tree.map(jnp.negative, delta_f), alive, selected, fraction)
    leaves, treedef = jax.tree.flatten(delta_f)
    alive_leaves = treedef.flatten_up_to(alive)
    chosen = treedef.flatten_up_to(selected)
    return treedef.unflatten([
        spike_and_slab(d, a)[0] if c else a
        for d, a, c in zip(leaves, alive_leaves, chosen, strict=True)
    ])  # fmt: skip


def selected_leaves(params, prunable=None):
    """``{leaf: bool}`` pytree: which leaves ``prunable`` (default: :func:`weight_matrices`)
    selects, after :func:`check_selects_weights`."""
    prunable = prunable or weight_matrices
    check_selects_weights(params, prunable)
    return _prunable_tree(params, prunable)


def pruned_fraction(masks, params, prunable=None) -> float:
    """Pruned share of the prunable entries (host-side, for reports)."""
    prunable = prunable or weight_matrices
    selected = jax.tree.leaves(_prunable_tree(params, prunable))
    chosen = [m for m, c in zip(jax.tree.leaves(masks), selected, strict=True) if c]
    total = sum(m.size for m in chosen)
    return 1.0 - sum(int(jnp.sum(m)) for m in chosen) / max(total, 1)
