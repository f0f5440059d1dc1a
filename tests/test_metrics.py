"""Metrics against hand-computed examples."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bmr_jax.inference import metrics

PROBS = jnp.array(
    [
        [0.9, 0.1],  # confident, right
        [0.6, 0.4],  # right
        [0.3, 0.7],  # wrong (label 0)
        [0.2, 0.8],  # right
    ]
)
LABELS = jnp.array([0, 0, 0, 1])


def test_accuracy_nll_lpd_by_hand():
    assert float(metrics.accuracy(PROBS, LABELS)) == 0.75
    logs = np.log([0.9, 0.6, 0.3, 0.8])
    np.testing.assert_allclose(metrics.lpd(PROBS, LABELS), logs.sum(), rtol=1e-6)
    np.testing.assert_allclose(metrics.nll(PROBS, LABELS), -logs.mean(), rtol=1e-6)


def test_nll_of_a_zero_probability_is_finite():
    value = metrics.nll(jnp.array([[1.0, 0.0]]), jnp.array([1]))
    assert np.isfinite(value) and value > 60


def test_ece_with_two_equal_mass_bins_by_hand():
    # confidences 0.9, 0.6, 0.7, 0.8 -> sorted 0.6 (right), 0.7 (wrong) | 0.8 (right), 0.9 (right)
    # bin 1: acc 1/2, conf 0.65 -> gap 0.15; bin 2: acc 1, conf 0.85 -> gap 0.15
    # ECE = 2/4 * 0.15 + 2/4 * 0.15 = 0.15
    np.testing.assert_allclose(metrics.ece(PROBS, LABELS, bins=2), 0.15, rtol=1e-6)
    # one bin: |mean acc - mean conf| = |0.75 - 0.75| = 0
    np.testing.assert_allclose(metrics.ece(PROBS, LABELS, bins=1), 0.0, atol=1e-7)
    # four bins (one datum each): mean of |correct - conf| = (0.1 + 0.4 + 0.7 + 0.2) / 4
    np.testing.assert_allclose(metrics.ece(PROBS, LABELS, bins=4), 0.35, rtol=1e-6)


def test_ece_twenty_bins_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1000, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 10, 1000)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    order = np.argsort(conf)
    expected = sum(
        len(b) / 1000 * abs(correct[b].mean() - conf[b].mean()) for b in np.array_split(order, 20)
    )
    np.testing.assert_allclose(metrics.ece(jnp.asarray(probs), jnp.asarray(labels)), expected,
                               rtol=1e-5)  # fmt: skip


def test_pruned_fraction_by_hand():
    masks = {
        "a": jnp.array([[True, False], [False, False]]),  # 3 of 4 pruned
        "b": jnp.ones((2, 3), bool),  # none pruned
        "head": jnp.array([[True, False]]),
    }
    out = metrics.pruned_fraction(masks, counted={"head": False})
    assert float(out["a"]) == 0.75 and float(out["b"]) == 0.0 and float(out["head"]) == 0.5
    assert out["total"] == pytest.approx(3 / 10)
