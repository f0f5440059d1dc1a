"""What a method does between two training blocks: one small protocol, six implementations.

A between-blocks step is a pure, jit-able function in the style of optax and blackjax::

    state, masks, gamma, info = step(state, masks, gamma, block, key)

``state`` is the :class:`bmr_jax.inference.train.TrainState` after block ``block - 1``;
``masks`` are ``{layer: bool (rows, cols)}`` (True = kept) and ``gamma`` the prior multipliers
the next block trains with (METHOD.md 2.1); ``block`` (traced) is the block about to start and
``key`` its randomness; ``info`` holds small per-layer statistics. The run loop
(:func:`bmr_jax.methods.run`) calls it before every block after the warm-up.

Each implementation is one module that registers a factory ``make(method, trainer) -> step``
in :data:`BETWEEN_BLOCKS` under the name a :class:`bmr_jax.methods.Method` gives as
``between``: ``nothing`` (plain SVI), ``spike_and_slab`` (BMR-S&S, METHOD.md 4.5),
``units`` (structured BMR, 4.3), ``groups`` (group BMR on a mean-field posterior),
``multipliers`` (structured BMR on per-unit multipliers),
``filters`` (L1-norm filter pruning), ``rhs`` (BMR-RHS, 4.6), ``sparse_vd`` (pruning at log
alpha > 3) and ``magnitude`` (gradual magnitude pruning). A factory that needs to know whether
the network's layers read each other in sequence (to find its units) takes a keyword
``sequential``. A new one is a module that registers its factory (a config's ``plugins``
imports it).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Protocol

from bmr_jax.registry import Registry


class BetweenBlocks(Protocol):
    def __call__(self, state, masks: dict, gamma: dict, block, key) -> tuple:
        """``(state, masks, gamma, info)`` for the next block."""


BETWEEN_BLOCKS: Registry[Callable[..., BetweenBlocks]] = Registry("between-blocks step")


def prior_variances(bnet) -> dict[str, float]:
    """Every Bayesian layer's full prior variance of ``Z`` (1 for the non-centred priors)."""
    return {s.name: bnet.prior.prior_variance(s) for s in bnet.view.bayesian_layers}


def make_between_blocks(method, trainer, *, sequential: bool = True) -> BetweenBlocks:
    """The between-blocks step of ``method`` (its ``between`` name) for ``trainer``;
    ``sequential`` (the registry's ``NetSpec.sequential``) reaches the factories that take it."""
    from bmr_jax.methods import between

    for name in ("filters", "groups", "magnitude", "multipliers", "nothing", "rhs", "sparse_vd",
                 "spike_and_slab", "units"):  # fmt: skip
        importlib.import_module(f"{between.__name__}.{name}")

    factory = BETWEEN_BLOCKS.get(method.between)
    if "sequential" in inspect.signature(factory).parameters:
        return factory(method, trainer, sequential=sequential)
    return factory(method, trainer)
