"""IVON against an exact conjugate posterior, and BMR pruning of plain Flax NNX and Equinox
models trained with it (real data, few steps)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bmr_jax import data
from bmr_jax.bmr.pruning import bmr_pruning, pruned_fraction
from bmr_jax.inference.ivon import find_ivon_state, ivon, posterior, sample_parameters


def test_ivon_finds_the_exact_gaussian_posterior_of_linear_regression():
    # y = X w + noise, orthogonal design: the posterior under the prior N(0, 1/(N delta)) is
    # exactly diagonal, precision X'X/sigma^2 + N delta, mean (that)^-1 X'y/sigma^2
    rng = np.random.default_rng(0)
    n, k, noise, delta = 200, 4, 0.3, 1e-2
    q, _ = np.linalg.qr(rng.normal(size=(n, k)))
    x = jnp.asarray(q * np.sqrt(n) * np.array([1.0, 0.5, 2.0, 0.2]))
    y = x @ jnp.array([0.5, -1.0, 0.2, 0.0]) + noise * jnp.asarray(rng.normal(size=n))
    precision = np.sum(np.asarray(x) ** 2, 0) / noise**2 + n * delta
    mean = (np.asarray(x).T @ np.asarray(y) / noise**2) / precision

    def loss(w):  # mean loss per datum
        return 0.5 * jnp.mean((y - x @ w) ** 2) / noise**2

    opt = ivon(0.05, ess=n, weight_decay=delta, b2=0.999, hess_init=1.0)
    params, state = jnp.zeros(k), opt.init(jnp.zeros(k))

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(sample_parameters(params, state))
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(6000):
        params, state = step(params, state)
    post = posterior(params, state)
    # the Hessian estimate is a Monte Carlo average (b2 = 0.999: ~1000 draws): 10 %
    np.testing.assert_allclose(post.precision, precision, rtol=0.1)
    np.testing.assert_allclose(post.mean, mean, atol=0.02)
    np.testing.assert_allclose(post.prior_var, 1 / (n * delta), rtol=1e-6)


@pytest.fixture(scope="module")
def mini():
    return data.load("mnist_mini", image_size=28)


def _train(loss_fn, params, optimizer, mini, steps=300, batch=100):
    images, labels = jnp.asarray(mini.train.images), jnp.asarray(mini.train.labels)

    @jax.jit
    def step(params, state, i):
        start = (i * batch) % (len(labels) - batch)
        x = jax.lax.dynamic_slice_in_dim(images, start, batch)
        y = jax.lax.dynamic_slice_in_dim(labels, start, batch)
        grads = jax.grad(loss_fn)(sample_parameters(params, state), x, y)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = optimizer.init(params)
    for i in range(steps):
        params, state = step(params, state, i)
    return params, state


def test_bmr_prunes_a_plain_flax_model_trained_with_ivon(mini):
    from flax import nnx

    from bmr_jax import nets

    model = nets.create_net("lenet_300_100", 10, mini.image_shape, "small", rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    optimizer = bmr_pruning(ivon(0.1, ess=len(mini.train)), every=100)
    params, state = _train(loss_fn, params, optimizer, mini)
    fraction = pruned_fraction(state.masks, params)
    assert 0.2 < fraction < 0.999
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(state.masks), strict=True):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
    logits = nnx.merge(graphdef, params)(jnp.asarray(mini.test.images))
    assert float(jnp.mean(jnp.argmax(logits, -1) == mini.test.labels)) > 0.85
    assert find_ivon_state(state).count == 300


def test_bmr_prunes_an_equinox_model_trained_with_ivon(mini):
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(784, 10, 100, 2, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)

    def loss_fn(params, x, y):
        net = eqx.combine(params, static)
        logits = jax.vmap(net)(x.reshape(len(x), -1))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    optimizer = bmr_pruning(ivon(0.1, ess=len(mini.train)), every=100)
    params, state = _train(loss_fn, params, optimizer, mini)
    assert 0.2 < pruned_fraction(state.masks, params) < 0.999
    net = eqx.combine(params, static)
    logits = jax.vmap(net)(jnp.asarray(mini.test.images).reshape(len(mini.test), -1))
    assert float(jnp.mean(jnp.argmax(logits, -1) == mini.test.labels)) > 0.85
