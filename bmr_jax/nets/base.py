"""What every network of the zoo shares: an input-shape check, dropout, parameter counting."""

from __future__ import annotations

import math

import jax
from flax import nnx

from bmr_jax.errors import ShapeMismatchError


def check_input(net: str, expected: tuple[int, ...], x: jax.Array) -> None:
    """Raises :class:`ShapeMismatchError` unless ``x`` is a batch of ``expected``-shaped inputs.

    Shapes are static in JAX, so this costs nothing inside ``jit``.
    """
    if tuple(x.shape[1:]) != tuple(expected):
        raise ShapeMismatchError(
            f"{net} was built for inputs of shape {tuple(expected)} (H, W, C) but got a batch of "
            f"shape {tuple(x.shape)}"
        )


def maybe_dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout | None:
    """An ``nnx.Dropout`` for ``rate > 0``; ``None`` (no module, no RNG state) otherwise."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return nnx.Dropout(rate, rngs=rngs) if rate > 0 else None


def apply_dropout(dropout: nnx.Dropout | None, x: jax.Array) -> jax.Array:
    return x if dropout is None else dropout(x)


def count_params(module: nnx.Module) -> int:
    """Number of scalar entries in the module's ``nnx.Param`` variables (weights, biases,
    LayerNorm scales and offsets, embedding tables)."""
    params = nnx.state(module, nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


ACTIVATIONS = {"swish": nnx.swish, "relu": nnx.relu, "tanh": nnx.tanh, "gelu": nnx.gelu}
