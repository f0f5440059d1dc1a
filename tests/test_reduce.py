"""The reduce step, sparsity accounting and the non-centred reduced posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmr_jax.bmr import (
    Evidence,
    SpikeAndSlab,
    delta_f,
    gamma_from_masks,
    make_reduce,
    noncentred_reduced_posterior,
    propagate_dead_units,
    sparsity,
)
from bmr_jax.layers import LayerSpec, LayerView


def _dense_view():
    """784 -> 3 -> 2 (dense), as rows x (fan_in + 1) matrices."""
    a = LayerSpec("a", ("a",), (4, 3), (3,), 3, 4, False)
    b = LayerSpec("b", ("b",), (3, 2), (2,), 2, 3, True, prunable=False)
    return LayerView((a, b))


def test_reduce_is_delta_f_then_the_rule_in_one_compiled_call():
    view = _dense_view()
    rng = np.random.default_rng(0)
    posterior = {
        s.name: (jnp.asarray(rng.normal(size=s.shape), jnp.float32),
                 jnp.asarray(rng.uniform(0.5, 50, s.shape), jnp.float32))
        for s in view.layers
    }  # fmt: skip
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    reduce = make_reduce(view, Evidence())
    result = reduce(posterior, masks, 2)
    for name, (mean, precision) in posterior.items():
        expected, _, _ = delta_f(mean, precision, 1.0, 0.0)
        np.testing.assert_allclose(result.delta_f[name], expected, rtol=1e-6)
    np.testing.assert_array_equal(result.masks["a"], result.delta_f["a"] <= 0)
    assert bool(jnp.all(result.masks["b"]))  # the classifier is not prunable
    for block in range(3, 8):  # block is traced: no recompilation
        result = reduce(posterior, result.masks, block)
    assert reduce._cache_size() == 1


def test_write_back_returns_the_prior_for_pruned_and_keeps_the_rest():
    view = _dense_view()
    mean = jnp.full((3, 5), 0.01)
    mean = mean.at[0].set(3.0)  # row 0 clearly needed
    precision = jnp.full((3, 5), 100.0)
    posterior = {"a": (mean, precision), "b": (jnp.ones((2, 4)), jnp.full((2, 4), 4.0))}
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    result = make_reduce(view, SpikeAndSlab())(posterior, masks, 2, True)
    kept = result.masks["a"]
    assert kept[0].all() and not kept[1:].any()
    loc, scale = result.reduced["a"]
    np.testing.assert_allclose(loc[0], 3.0, rtol=1e-6)  # kept: unchanged
    np.testing.assert_allclose(scale[0], 0.1, rtol=1e-6)
    np.testing.assert_allclose(loc[1:], 0.0, atol=1e-12)  # pruned: back to N(0, 1)
    np.testing.assert_allclose(scale[1:], 1.0, rtol=1e-6)


def test_noncentred_reduced_posterior_is_the_rescaled_reduced_posterior():
    mu, pi, s, g = 0.7, 9.0, 1.0, 0.25
    _, mean, precision = delta_f(mu, pi, s, g)
    gamma = np.sqrt(g / s)
    loc, prec = noncentred_reduced_posterior(mu, pi, s, g)
    np.testing.assert_allclose(loc, float(mean) / gamma, rtol=1e-6)
    np.testing.assert_allclose(prec, float(precision) * gamma**2, rtol=1e-6)


def test_dead_units_propagate_through_dense_layers():
    view = _dense_view()
    masks = {
        "a": jnp.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], bool),
        "b": jnp.ones((2, 4), bool),
    }
    effective = propagate_dead_units(masks, view)
    # unit 1 of layer a is dead (whole row incl. bias); unit 2 keeps a weight: alive
    np.testing.assert_array_equal(effective["b"], [[1, 0, 1, 1], [1, 0, 1, 1]])
    counts = sparsity(masks, view, sequential=True)
    assert counts["pruned_fraction"] == pytest.approx(9 / 23)
    assert counts["dead_fraction"] == pytest.approx(11 / 23)
    assert counts["compression"] == pytest.approx(23 / 12)
    assert counts["layers"]["a"] == pytest.approx(9 / 15) and counts["layers"]["b"] == 0
    assert sparsity(masks, view, sequential=False)["dead_fraction"] == pytest.approx(9 / 23)


def test_dead_channels_of_a_conv_kill_their_flattened_features():
    conv = LayerSpec("conv", ("conv",), (1, 1, 1, 2), (2,), 2, 1, False)
    # NHWC flatten of 2 channels x 3 positions: feature k reads channel k % 2
    dense = LayerSpec("dense", ("dense",), (6, 1), (1,), 1, 6, True)
    masks = {"conv": jnp.array([[True, True], [False, False]]), "dense": jnp.ones((1, 7), bool)}
    effective = propagate_dead_units(masks, LayerView((conv, dense)))
    np.testing.assert_array_equal(effective["dense"], [[1, 0, 1, 0, 1, 0, 1]])


def test_gamma_from_masks():
    gamma = gamma_from_masks({"a": jnp.array([True, False])})
    np.testing.assert_allclose(gamma["a"], [1.0, 1e-12])
    assert gamma["a"].dtype == jnp.result_type(float)
    jax.block_until_ready(gamma)


def test_structured_reduce_prunes_whole_units_from_a_matrix_normal_guide():
    """dense.0 of a LeNet-5 with a matrix-normal guide: units 0-41 get posteriors tight around
    0, units 42-83 clearly non-zero means; the unit rule removes exactly units 0-41, whole rows
    (weights and bias), and Delta F per unit equals the closed form on the guide's summaries."""
    from bmr_jax import data, methods
    from bmr_jax.bmr import delta_f_matrix_normal_rows, make_neuron_reduce, matrix_normal_posterior

    ds = data.load("mnist_mini", image_size=32)
    setup = methods.build("bmr_units", ds, net="lenet5", preset="small", seed=0)
    trainer = setup.trainer
    state = trainer.init()
    rows, cols = 84, 121
    loc = np.concatenate([np.zeros((42, cols)), np.full((42, cols), 2.0)]).astype(np.float32)
    state = trainer.set_params(
        state,
        {"dense.0/z/loc": loc, "dense.0/z/row_scale": np.full(rows, 1e-2, np.float32)},
    )
    view = setup.bnet.view
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.bayesian_layers}
    result = make_neuron_reduce(trainer, SpikeAndSlab())(state, masks, 2)
    kept_units = np.asarray(result.masks["dense.0"]).all(axis=1)
    np.testing.assert_array_equal(kept_units, np.arange(rows) >= 42)
    assert not np.asarray(result.masks["dense.0"])[:42].any()  # whole rows, bias included
    assert np.asarray(result.masks["head"]).all()
    mean, row_var, col_cov = matrix_normal_posterior(trainer.params(state), view)["dense.0"]
    expected = delta_f_matrix_normal_rows(mean, row_var, col_cov, 1.0, jnp.zeros(rows))
    np.testing.assert_allclose(result.delta_f["dense.0"], expected, rtol=1e-5)
