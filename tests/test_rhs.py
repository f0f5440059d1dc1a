"""BMR-RHS: the hyper-parameter fit on a constructed layer, and the coordinate changes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bmr_jax import data, methods
from bmr_jax.bayes.layers import LayerSpec, LayerView
from bmr_jax.bmr import delta_f
from bmr_jax.bmr.rhs import flat_posterior, make_rhs_fit, rhs_gamma_and_masks


def test_fit_keeps_informative_units_and_prunes_the_others():
    """20 units of 10 inputs: units 0-9 have clearly non-zero posterior means, units 10-19
    posteriors tightly around 0. The fitted neuron-wise scales separate them by more than an
    order of magnitude (measured: >= 2.2 vs <= 0.04), so the 0.1 threshold prunes exactly the
    uninformative units."""
    hidden = LayerSpec("a", ("a",), (9, 20), (20,), 20, 9, False)
    head = LayerSpec("b", ("b",), (20, 3), (3,), 3, 20, True, prunable=False)
    view = LayerView((hidden, head))
    rng = np.random.default_rng(0)
    mean = np.concatenate([rng.normal(0, 3, (10, 10)), rng.normal(0, 0.05, (10, 10))])
    posterior = {"a": (jnp.asarray(mean, jnp.float32), jnp.full((20, 10), 400.0))}
    gamma, losses = make_rhs_fit(view)(jax.random.key(0), posterior)
    assert set(gamma) == {"a"} and np.isfinite(np.asarray(losses)).all()
    assert losses[-50:].mean() < losses[:50].mean()
    scales = np.asarray(gamma["a"][:, 0])
    assert scales[:10].min() > 10 * scales[10:].max()
    masks = {"a": jnp.ones((20, 10), bool), "b": jnp.ones((3, 21), bool)}
    multipliers, new_masks = rhs_gamma_and_masks(gamma, masks, 0.1)
    np.testing.assert_array_equal(new_masks["a"].all(axis=1), np.arange(20) < 10)
    assert not new_masks["a"][10:].any() and new_masks["b"].all()
    np.testing.assert_allclose(multipliers["a"][:10], gamma["a"][:10])
    np.testing.assert_allclose(multipliers["a"][10:], 1e-12)
    np.testing.assert_allclose(multipliers["b"], 1.0)


def test_flat_posterior_undoes_a_reduction():
    """Reduce a flat posterior with reduced variance gamma^2 (delta_f), move it to the
    non-centred coordinates Z' = Z / gamma, and flat_posterior gives the original back."""
    mean, precision = jnp.array([0.5, -2.0, 0.0]), jnp.array([30.0, 5.0, 1.2])
    gamma = jnp.array([0.3, 1.7, 0.8])
    _, reduced_mean, reduced_precision = delta_f(mean, precision, 1.0, jnp.square(gamma))
    noncentred = (reduced_mean / gamma, reduced_precision * jnp.square(gamma))
    masks = {"a": jnp.ones(3, bool)}
    back_mean, back_precision = flat_posterior({"a": noncentred}, {"a": gamma}, masks)["a"]
    # entry 2 has mean 0: the reduced mean (a product with mu) is exactly 0 and so is the
    # recovered one; the others (0.5, -2.0) come back through ~10 float32 operations, so
    # rtol 1e-5, and atol 1e-6 states the zero (10 eps32 times means of size <= 2 is 2.4e-6
    # only for the non-zero entries, which rtol covers)
    np.testing.assert_allclose(back_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back_precision, precision, rtol=1e-5)


def test_uninformed_and_pruned_weights_become_the_prior():
    posterior = {"a": (jnp.array([2.0, 2.0, 2.0]), jnp.array([0.5, 1.0005, 50.0]))}
    masks = {"a": jnp.array([True, True, False])}
    mean, precision = flat_posterior(posterior, {"a": jnp.ones(3)}, masks)["a"]
    np.testing.assert_array_equal(mean, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(precision, [1.0, 1.0, 1.0])


def test_bmr_rhs_runs_end_to_end():
    # LeNet-300-100: a dense network compiles in a fraction of LeNet-5's time
    ds = data.load("mnist_mini", image_size=28)
    setup = methods.build("bmr_rhs", ds, net="lenet_300_100", preset="small", seed=0,
                          train=methods.TrainSettings(blocks=2, steps_per_block=100))
    records = methods.run(setup, ds, evaluation=methods.EvalSettings(samples=2),
                          hooks=methods.RunHooks(progress=False))  # fmt: skip
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["nll"]) for r in records)
    assert records[-1]["acc"] > 0.8 and records[1]["reduce_seconds"] > 0


def test_bmr_rhs_through_two_reduce_steps_changes_gamma_and_the_masks():
    """Issue 38: a real run through the reduce steps before blocks 2 and 3, watched at the
    between-blocks call: each gets its own key (the fit draws from it), gamma moves at each
    and the loop hands it on, and weights are pruned."""
    import jax

    ds = data.load("mnist_mini", image_size=28)
    setup = methods.build("bmr_rhs", ds, net="lenet_300_100", preset="small", seed=0,
                          train=methods.TrainSettings(blocks=3, steps_per_block=100))
    seen, between = [], setup.between

    def watched(state, masks, gamma, block, key):
        out = between(state, masks, gamma, block, key)
        seen.append((block, np.asarray(jax.random.key_data(key)), jax.device_get(gamma),
                     jax.device_get(out[2]), jax.device_get(out[1])))  # fmt: skip
        return out

    setup.between = watched
    records = methods.run(setup, ds, evaluation=methods.EvalSettings(samples=2, every=3),
                          hooks=methods.RunHooks(progress=False))  # fmt: skip
    assert [block for block, *_ in seen] == [2, 3]
    (_, key2, before2, gamma2, masks2), (_, key3, before3, gamma3, masks3) = seen
    assert not np.array_equal(key2, key3)
    layer = "hidden.0"
    assert np.all(before2[layer] == 1.0) and not np.allclose(gamma2[layer], 1.0)
    np.testing.assert_array_equal(before3[layer], gamma2[layer])  # handed on to the next block
    assert not np.allclose(gamma3[layer], gamma2[layer])
    pruned = [1 - float(np.mean(m[layer])) for m in (masks2, masks3)]
    assert 0 < pruned[0] <= pruned[1]
    assert records[-1]["pruned_fraction"] > 0
