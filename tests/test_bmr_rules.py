"""Decision rules on constructed inputs with known answers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma, expit

from bmr_jax.bmr import Evidence, PolynomialSchedule, SpikeAndSlab, TargetSparsity, spike_and_slab


def _reference_zeta(df, alive, iterations=4):
    """METHOD.md 4.4.1 written out with scipy, pruned weights excluded (q = 0)."""
    zeta = digamma(1.0) - digamma(1.0)
    for _ in range(iterations):
        q = expit(zeta - df) * alive
        zeta = digamma(1.0 + q.sum()) - digamma(1.0 + len(df) - q.sum())
    return zeta


def test_spike_and_slab_on_a_clear_split():
    df = np.array([-10.0] * 90 + [10.0] * 10)
    keep, zeta = spike_and_slab(jnp.asarray(df), jnp.ones(100, bool))
    # q is 1 for the first 90 and 0 for the last 10 (up to e^-8): zeta ~ psi(91) - psi(11)
    np.testing.assert_allclose(zeta, digamma(91) - digamma(11), rtol=1e-3)
    assert keep[:90].all() and not keep[90:].any()


def test_spike_and_slab_matches_an_independent_implementation():
    rng = np.random.default_rng(0)
    df = rng.normal(0.5, 2.0, 500)
    alive = rng.uniform(size=500) > 0.2
    keep, zeta = spike_and_slab(jnp.asarray(df), jnp.asarray(alive))
    reference = _reference_zeta(df, alive)
    np.testing.assert_allclose(zeta, reference, rtol=1e-5)
    np.testing.assert_array_equal(keep, alive & (df <= reference))


def test_rules_never_resurrect_and_never_prune_the_classifier():
    df = {"a": jnp.array([-50.0, -50.0, 3.0]), "head": jnp.array([9.0, 9.0])}
    alive = {"a": jnp.array([False, True, True]), "head": jnp.array([True, True])}
    prunable = {"a": True, "head": False}
    for rule in (
        SpikeAndSlab(),
        Evidence(),
        TargetSparsity(PolynomialSchedule(final=0.0, initial=0.0)),
    ):
        masks, _ = rule(df, alive, prunable, 1)
        assert not bool(masks["a"][0])  # pruned before, stays pruned despite Delta F = -50
        np.testing.assert_array_equal(masks["head"], [True, True])


def test_evidence_rule():
    df = {"a": jnp.array([-0.1, 0.0, 0.1, 5.0])}
    masks, _ = Evidence()(df, {"a": jnp.ones(4, bool)}, {"a": True}, 1)
    np.testing.assert_array_equal(masks["a"], [True, True, False, False])


def test_target_sparsity_layer_and_global():
    df = {"a": jnp.array([0.0, 5.0, -1.0, 3.0]), "b": jnp.array([10.0, -5.0])}
    alive = {"a": jnp.ones(4, bool), "b": jnp.ones(2, bool)}
    prunable = {"a": True, "b": True}
    half = TargetSparsity(PolynomialSchedule(final=0.5, initial=0.5))
    masks, info = half(df, alive, prunable, 1)
    assert float(info["target"]) == 0.5
    np.testing.assert_array_equal(masks["a"], [True, False, True, False])  # top 2 by Delta F
    np.testing.assert_array_equal(masks["b"], [False, True])
    # global: 3 of the 6 weights, the highest Delta F anywhere: 10, 5, 3
    masks, _ = TargetSparsity(PolynomialSchedule(final=0.5, initial=0.5), scope="global")(
        df, alive, prunable, 1
    )
    np.testing.assert_array_equal(masks["a"], [True, False, True, False])
    np.testing.assert_array_equal(masks["b"], [False, True])
    # already-pruned weights count towards the target
    alive["a"] = jnp.array([False, True, True, True])
    masks, _ = TargetSparsity(PolynomialSchedule(final=0.5, initial=0.5))(df, alive, prunable, 1)
    np.testing.assert_array_equal(masks["a"], [False, False, True, True])
    with pytest.raises(ValueError, match="scope"):
        TargetSparsity(PolynomialSchedule(final=0.5, initial=0.5), scope="net")(
            df, alive, prunable, 1
        )


def test_polynomial_schedule_by_hand():
    schedule = PolynomialSchedule(final=0.9, initial=0.0, begin=2, end=12, power=3)
    assert float(schedule(1)) == 0.0
    assert float(schedule(2)) == pytest.approx(0.0)
    assert float(schedule(7)) == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert float(schedule(12)) == pytest.approx(0.9) and float(schedule(40)) == pytest.approx(0.9)
