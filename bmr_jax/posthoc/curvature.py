"""The diagonal of the generalised Gauss-Newton matrix of a trained network (issue 39).

For a likelihood ``p(y | f(x, theta))`` with output Hessian ``Lambda(f) = -d^2 ln p / df^2``
the GGN over the data is ``G = sum_n J_n^T Lambda_n J_n`` with ``J_n = df(x_n)/dtheta``
(Martens 2020, "New insights and perspectives on the natural gradient method", section 8;
Immer et al. 2021). Writing ``Lambda = sum_c l_c l_c^T``, its diagonal is
``sum_n sum_c (J_n^T l_c)^2``: one vector-Jacobian product per output and datum, squared.

- categorical (softmax cross-entropy): ``Lambda = diag(p) - p p^T``, whose factors are
  ``l_c = sqrt(p_c) (e_c - p)`` (``sum_c l_c l_c^T = diag(p) - 2 p p^T + p p^T``);
- Gaussian with noise ``sigma``: ``Lambda = I / sigma^2``, ``l_c = e_c / sigma``.

This is exact by default; with a ``key`` it is estimated from one label a datum drawn from
the network's own predictive (:func:`sampled_factor`), never from the true labels. Written here
rather than taken from laplax (version 0.0.2 when this was written, with its own
dependencies): the piece is a dozen lines over ``jax.vjp`` and works on any pytree of
parameters -- an ``nnx.State``, an Equinox model's arrays, a dict.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

LIKELIHOODS = ("categorical", "gaussian")


def output_factors(outputs: jax.Array, likelihood: str, noise_sd: float = 1.0) -> jax.Array:
    """``(C, C)`` rows ``l_c`` with ``Lambda(outputs) = sum_c l_c l_c^T`` (one datum)."""
    if likelihood == "categorical":
        p = jax.nn.softmax(outputs)
        return jnp.sqrt(p)[:, None] * (jnp.eye(p.size, dtype=p.dtype) - p[None, :])
    if likelihood == "gaussian":
        return jnp.eye(outputs.size, dtype=outputs.dtype) / noise_sd
    raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")


def sampled_factor(outputs: jax.Array, key: jax.Array) -> jax.Array:
    """One row ``e_y - p`` with ``y ~ Categorical(p)``: ``E_y[(e_y - p)(e_y - p)^T] =
    diag(p) - p p^T``, so its squared pullback is an unbiased estimate of the diagonal at one
    vector-Jacobian product a datum instead of one per class (the Fisher of sampled labels,
    Martens 2020 section 9.2; not the "empirical Fisher" of the true labels)."""
    p = jax.nn.softmax(outputs)
    y = jax.random.categorical(key, outputs)
    return (jax.nn.one_hot(y, p.size, dtype=p.dtype) - p)[None]


def ggn_diagonal(apply: Callable, params, inputs, *, likelihood: str = "categorical",
                 noise_sd: float = 1.0, batch_size: int = 32,
                 key: jax.Array | None = None):  # fmt: skip
    """``diag(sum_n J_n^T Lambda_n J_n)`` as a pytree like ``params``.

    Args:
      apply: ``apply(params, x) -> outputs`` for a batch ``x`` (logits for ``categorical``).
      inputs: the data the posterior is conditioned on (numpy or jax), first axis the data.
      batch_size: data per compiled call; memory holds ``batch_size x outputs`` gradients.
      key: ``categorical`` only: estimate with one sampled label a datum
        (:func:`sampled_factor`, about ``C`` times cheaper) instead of the exact sum.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    if key is not None and likelihood != "categorical":
        raise ValueError("key: the sampled estimate is for the categorical likelihood")

    def one_datum(p, x, datum_key):
        outputs, pullback = jax.vjp(lambda q: apply(q, x[None])[0], p)
        factors = (output_factors(outputs, likelihood, noise_sd) if key is None
                   else sampled_factor(outputs, datum_key))  # fmt: skip
        squares = jax.vmap(lambda row: jax.tree.map(jnp.square, pullback(row)[0]))(factors)
        return jax.tree.map(lambda s: s.sum(0), squares)

    @jax.jit
    def chunk(p, x, keys):
        per_datum = jax.vmap(one_datum, in_axes=(None, 0, 0))(p, x, keys)
        return jax.tree.map(lambda s: s.sum(0), per_datum)

    keys = jax.random.split(jax.random.key(0) if key is None else key, len(inputs))
    total = jax.tree.map(jnp.zeros_like, params)
    for start in range(0, len(inputs), batch_size):
        stop = start + batch_size
        part = chunk(params, jnp.asarray(inputs[start:stop]), keys[start:stop])
        total = jax.tree.map(jnp.add, total, part)
    return total


def log_likelihood(apply: Callable, params, inputs, targets, *, likelihood: str = "categorical",
                   noise_sd: float = 1.0, batch_size: int = 1000) -> float:  # fmt: skip
    """``sum_n ln p(y_n | f(x_n, params))`` (labels for ``categorical``, values for
    ``gaussian``)."""

    @jax.jit
    def chunk(p, x, y):
        out = apply(p, x)
        if likelihood == "categorical":
            return jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], axis=1))
        residual = (out - y) / noise_sd
        return jnp.sum(-0.5 * residual**2 - jnp.log(noise_sd) - 0.5 * jnp.log(2 * jnp.pi))

    total = 0.0
    for start in range(0, len(inputs), batch_size):
        stop = start + batch_size
        total += float(chunk(params, jnp.asarray(inputs[start:stop]),
                             jnp.asarray(targets[start:stop])))  # fmt: skip
    return float(np.float64(total))
