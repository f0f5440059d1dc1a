"""Decision rules on constructed inputs with known answers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma, expit

from bmr_jax.bmr import Evidence, PolynomialSchedule, SpikeAndSlab, TargetSparsity, spike_and_slab


def _reference_zeta(df, alive, iterations=4, rate_over="layer"):
    """METHOD.md 4.4.1 written out with scipy; ``layer``: pruned weights excluded (q = 0)
    among all of the layer's; ``alive``: sums over the alive weights only; ``all``: every
    entry votes with its own Delta F (METHOD.md 4.7)."""
    n = alive.sum() if rate_over == "alive" else len(df)
    votes = np.ones_like(alive) if rate_over == "all" else alive  # all: every entry votes
    zeta = digamma(1.0) - digamma(1.0)
    for _ in range(iterations):
        q = expit(zeta - df) * votes
        zeta = digamma(1.0 + q.sum()) - digamma(1.0 + n - q.sum())
    return zeta


def test_spike_and_slab_on_a_clear_split():
    df = np.array([-10.0] * 90 + [10.0] * 10)
    keep, zeta = spike_and_slab(jnp.asarray(df), jnp.ones(100, bool))
    # q is 1 for the first 90 and 0 for the last 10 (up to e^-8): zeta ~ psi(91) - psi(11)
    np.testing.assert_allclose(zeta, digamma(91) - digamma(11), rtol=1e-3)
    assert keep[:90].all() and not keep[90:].any()


@pytest.mark.parametrize("rate_over", ["layer", "alive", "all"])
def test_spike_and_slab_matches_an_independent_implementation(rate_over):
    rng = np.random.default_rng(0)
    df = rng.normal(0.5, 2.0, 500)
    alive = rng.uniform(size=500) > 0.2
    keep, zeta = spike_and_slab(jnp.asarray(df), jnp.asarray(alive), rate_over=rate_over)
    reference = _reference_zeta(df, alive, rate_over=rate_over)
    np.testing.assert_allclose(zeta, reference, rtol=1e-5)
    np.testing.assert_array_equal(keep, alive & (df <= reference))


def test_inclusion_rate_over_the_layer_or_the_survivors_by_hand():
    """``bmr.inclusion_rate``: the learned rate counts the whole layer, the survivors or
    every entry, by hand."""
    # 8 of 10 weights pruned; the 2 alive have overwhelming evidence for inclusion (q = 1)
    df, alive = jnp.array([-30.0, -30.0] + [0.0] * 8), jnp.arange(10) < 2
    _, layer = spike_and_slab(df, alive, iterations=1)
    _, survivors = spike_and_slab(df, alive, iterations=1, rate_over="alive")
    np.testing.assert_allclose(layer, digamma(3.0) - digamma(9.0), rtol=1e-5)  # a=1+2, b=1+8
    np.testing.assert_allclose(survivors, digamma(3.0) - digamma(1.0), rtol=1e-5)  # b = 1 + 0
    # the reference counting: the 8 pruned entries have relaxed to Delta F = 0 and vote
    # q = sigmoid(zeta_0) = 1/2 each: a = 1 + 2 + 4, b = 1 + 4
    _, every = spike_and_slab(df, alive, iterations=1, rate_over="all")
    np.testing.assert_allclose(every, digamma(7.0) - digamma(5.0), rtol=1e-5)
    with pytest.raises(ValueError, match="rate_over"):
        spike_and_slab(df, alive, rate_over="weights")


def test_reference_counting_stops_the_ratchet_that_layer_counting_starts():
    """A layer 90 % pruned whose pruned entries relaxed to Delta F = 0 and whose 10 % alive
    lean towards inclusion (Delta F = -0.5): counting pruned entries as q = 0 drives zeta to
    about -7 and prunes every survivor; counting their relaxed votes keeps zeta near 0 (0.19)
    and keeps them all."""
    df = jnp.concatenate([jnp.zeros(900), jnp.full(100, -0.5)])
    alive = jnp.arange(1000) >= 900
    keep_layer, zeta_layer = spike_and_slab(df, alive, rate_over="layer")
    keep_all, zeta_all = spike_and_slab(df, alive, rate_over="all")
    assert zeta_layer < -5.0 and not keep_layer.any()
    assert -0.5 < zeta_all < 0.5 and keep_all[900:].all() and not keep_all[:900].any()
    reference = _reference_zeta(np.asarray(df), np.asarray(alive), rate_over="all")
    np.testing.assert_allclose(zeta_all, reference, rtol=1e-5)


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
