"""Evaluation metrics (METHOD.md section 5), pure jit-able functions of predictive
probabilities ``probs`` (``(N, C)``, rows summing to 1) and integer labels ``y`` (``(N,)``)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

TINY = 1e-30  # floor of a probability before its log (a float32 normal number)


def accuracy(probs: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of arg-max predictions equal to the label."""
    return jnp.mean(jnp.argmax(probs, axis=-1) == y)


def log_predictive(probs: jax.Array, y: jax.Array) -> jax.Array:
    """``ln p(y_n | x_n)`` of every datum under the predictive ``probs``."""
    p = jnp.take_along_axis(probs, y[:, None], axis=-1)[:, 0]
    return jnp.log(jnp.maximum(p, TINY))


def nll(probs: jax.Array, y: jax.Array) -> jax.Array:
    """``-mean_n ln((1/S) sum_s p(y_n | x_n, W_s))``: mean negative log predictive density."""
    return -jnp.mean(log_predictive(probs, y))


def lpd(probs: jax.Array, y: jax.Array) -> jax.Array:
    """Log pointwise predictive density ``sum_n ln((1/S) sum_s p(y_n | x_n, W_s))`` (the total;
    ``-lpd / N`` is the NLL)."""
    return jnp.sum(log_predictive(probs, y))


def ece(probs: jax.Array, y: jax.Array, bins: int = 20) -> jax.Array:
    """Expected calibration error with ``bins`` equal-mass (quantile) bins on the confidence
    ``max_c probs``: ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``.

    Data are sorted by confidence and datum of rank ``r`` goes to bin ``floor(r * bins / N)``,
    so bin sizes differ by at most one.
    """
    n = probs.shape[0]
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == y).astype(probs.dtype)
    rank = jnp.argsort(jnp.argsort(confidence))
    which = (rank * bins) // n
    count = jax.ops.segment_sum(jnp.ones_like(confidence), which, num_segments=bins)
    gap = jax.ops.segment_sum(correct - confidence, which, num_segments=bins)
    # |sum_b(acc - conf)| / N per bin equals |B_b| / N * |acc_b - conf_b|
    return jnp.sum(jnp.abs(gap)) / jnp.maximum(jnp.sum(count), 1.0)


def pruned_fraction(
    masks: Mapping[str, jax.Array], counted: Mapping[str, bool] | None = None
) -> dict[str, jax.Array]:
    """Pruned fraction of every layer and in total.

    Args:
      masks: ``{layer: boolean array}``, True where the weight (or bias) is kept.
      counted: ``{layer: bool}``, which layers enter the total (default all); the classifier,
        which decision rules never prune, is usually left out.

    Returns:
      ``{layer: pruned / entries, ..., "total": pruned / entries of the counted layers}``.
      Entries are all weights and biases of the layer's ``(rows, fan_in + 1)`` matrix.
    """
    out, pruned, total = {}, 0, 0
    for name, mask in masks.items():
        kept = jnp.sum(mask)
        out[name] = 1.0 - kept / mask.size
        if counted is None or counted.get(name, True):
            pruned += mask.size - kept
            total += mask.size
    out["total"] = pruned / max(total, 1)
    return out
