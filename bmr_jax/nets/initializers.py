"""Flax's default initialisers, with the same values and a fraction of the compilation.

``nnx.Linear`` and ``nnx.Conv`` start their kernels from ``lecun_normal`` (a normal truncated
to two standard deviations, scaled by ``1 / sqrt(fan_in)``) and their biases at zero;
``nnx.LayerNorm`` starts at one and zero. Run eagerly, as module construction runs them, each
distinct weight shape is a new XLA program. On a CPU one costs 1-4 s to compile (a uniform
draw of shape (100, 10): 4.2 s; of (1000,): 0.6 s). Building, training and evaluating the
small networks of `tests/test_nets.py`, `test_methods.py` and `test_model.py` spent 62 s of
their 325 s of compilation on 33 truncated-normal shapes alone (`scripts/bench_init.py`
measures whole networks).

JAX's threefry generator is counter based: with ``jax_threefry_partitionable`` (the default)
element ``i`` of a draw depends on the key and ``i`` alone, so a longer flat draw, cut and
reshaped, holds the same bits. These draw the next power of two of the size (at least 2^16)
and do the cutting, reshaping and scaling in numpy (float32 ``sqrt``, division and product are
exactly rounded in both), so the values equal Flax's bit for bit (`tests/test_initializers.py`)
at one compilation per power of two and dtype. Under tracing (``nnx.eval_shape``, ``nnx.jit``) or
with the partitionable generator turned off they fall back to Flax's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TRUNCATED_STDDEV = 0.87962566103423978  # sd of a standard normal truncated to (-2, 2)
MIN_DRAW = 1 << 16  # smaller draws share one program: 65,536 normals cost well under 1 ms


def _concrete(key) -> bool:
    return not isinstance(key, jax.core.Tracer) and bool(jax.config.jax_threefry_partitionable)


def flat_draw(sample: Callable, key: jax.Array, shape, dtype=jnp.float32) -> np.ndarray:
    """``sample(key, shape, dtype)`` (a ``jax.random`` function of that signature) as a numpy
    array, drawn as the first ``prod(shape)`` entries of a flat draw of the next power of two
    (at least ``MIN_DRAW``)."""
    size = math.prod(shape)
    padded = max(MIN_DRAW, 1 << max(size - 1, 0).bit_length())
    return np.asarray(sample(key, (padded,), dtype))[:size].reshape(shape)


def lecun_normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """``jax.nn.initializers.lecun_normal()``: truncated normal with variance ``1 / fan_in``,
    ``fan_in`` = the second-last axis times the receptive field (all axes before it)."""
    shape = tuple(shape)
    if not _concrete(key) or len(shape) < 2:
        return nnx.initializers.lecun_normal()(key, shape, dtype)
    fan_in = shape[-2] * math.prod(shape[:-2])
    dtype = np.dtype(dtype)
    variance = np.asarray(1.0 / fan_in, dtype)
    stddev = np.sqrt(variance) / np.asarray(TRUNCATED_STDDEV, dtype)

    def standard(k, s, d):
        return jax.random.truncated_normal(k, -2, 2, s, d)

    return jnp.asarray(flat_draw(standard, key, shape, dtype) * stddev)


def normal(stddev: float) -> Callable:
    """``jax.nn.initializers.normal(stddev)``: ``N(0, stddev^2)``."""

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        if not _concrete(key):
            return nnx.initializers.normal(stddev)(key, shape, dtype)
        dtype = np.dtype(dtype)
        draw = flat_draw(jax.random.normal, key, tuple(shape), dtype)
        return jnp.asarray(draw * np.asarray(stddev, dtype))

    return init


def uniform(key: jax.Array, shape, minval: float, maxval: float, dtype=jnp.float32) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, e.g. the reference code's
    start of every latent in ``[-2, 2]`` (METHOD.md 4.7)."""
    if not _concrete(key):
        return jax.random.uniform(key, shape, dtype, minval, maxval)

    def sample(k, s, d):
        return jax.random.uniform(k, s, d, minval, maxval)

    return jnp.asarray(flat_draw(sample, key, tuple(shape), np.dtype(dtype)))


def zeros(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """``jax.nn.initializers.zeros`` without an XLA program per shape."""
    return jnp.asarray(np.zeros(tuple(shape), np.dtype(dtype)))


def ones(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """``jax.nn.initializers.ones`` without an XLA program per shape."""
    return jnp.asarray(np.ones(tuple(shape), np.dtype(dtype)))


DENSE = {"kernel_init": lecun_normal, "bias_init": zeros}  # nnx.Linear, nnx.Conv, attention
NORM = {"scale_init": ones, "bias_init": zeros}  # nnx.LayerNorm
