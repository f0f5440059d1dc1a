"""The local reparameterisation estimator (bmr_jax.bayes.local) against independent references.

- Pre-activation moments of a dense and a convolution layer: the closed form
  ``E = sum x M``, ``Var = sum x^2 V`` written here with numpy (and for the convolution with an
  explicit loop over patches), and Monte Carlo over weight draws ``W ~ N(M, V)``.
- The ELBO gradient of a linear-Gaussian model, whose expected log-likelihood has a closed form:
  the mean of the local estimator's gradients over many keys equals the exact gradient within
  five standard errors (and so does the weight-sampling estimator's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmr_jax.bayes import guides
from bmr_jax.bayes.likelihoods import GaussianLikelihood
from bmr_jax.bayes.local import GaussianPreactivation, with_weights
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.bayes.priors import FlatPrior
from bmr_jax.data import Split
from bmr_jax.inference.train import SVITrainer

DRAWS = 20_000


def _draws(layer, x, mean_kernel, var_kernel, mean_bias, var_bias):
    """(local pre-activations, weight-sampled pre-activations), DRAWS each."""
    sampled = GaussianPreactivation(with_weights(layer, mean_kernel, mean_bias),
                                    with_weights(layer, var_kernel, var_bias), jax.random.key(0))

    def local(key):
        return GaussianPreactivation(sampled.layer, sampled.variance, key)(x)

    def weights(key):
        k1, k2 = jax.random.split(key)
        kernel = mean_kernel + jnp.sqrt(var_kernel) * jax.random.normal(k1, mean_kernel.shape)
        bias = mean_bias + jnp.sqrt(var_bias) * jax.random.normal(k2, mean_bias.shape)
        return with_weights(layer, kernel, bias)(x)

    keys = jax.random.split(jax.random.key(1), DRAWS)
    return jax.jit(jax.vmap(local))(keys), jax.jit(jax.vmap(weights))(keys)


def _check_moments(draws, mean, var):
    """Sample mean within 5 standard errors, sample variance within 5 of its standard errors
    (sqrt(2 / n) relative for a Gaussian)."""
    draws = np.asarray(draws, np.float64)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(var / DRAWS))
    assert np.all(np.abs(draws.var(0) / var - 1) < 5 * np.sqrt(2 / DRAWS))


def test_dense_preactivations_have_the_weight_sampling_moments():
    rng = np.random.default_rng(0)
    layer = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    m_k, m_b = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    v_k = rng.uniform(0.1, 2, (5, 3)).astype(np.float32)
    v_b = rng.uniform(0.1, 2, 3).astype(np.float32)
    mean = x @ m_k + m_b  # E[b_j] = sum_i x_i M_ij + m_bias_j
    var = (x**2) @ v_k + v_b  # Var[b_j] = sum_i x_i^2 V_ij + v_bias_j
    local, weights = _draws(layer, x, m_k, v_k, m_b, v_b)
    _check_moments(local, mean, var)
    _check_moments(weights, mean, var)


def test_conv_preactivations_have_the_weight_sampling_moments():
    rng = np.random.default_rng(1)
    layer = nnx.Conv(2, 3, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
    x = rng.uniform(0.5, 1.5, (1, 4, 4, 2)).astype(np.float32)  # positive: correlated positions
    m_k = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    v_k = rng.uniform(0.1, 1, (3, 3, 2, 3)).astype(np.float32)
    m_b, v_b = rng.normal(size=3).astype(np.float32), rng.uniform(0.1, 1, 3).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    mean, var = np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 3))
    for r in range(4):  # cross-correlation patch by patch, zero padding
        for c in range(4):
            patch = padded[0, r : r + 3, c : c + 3, :]
            mean[0, r, c] = np.einsum("hwi,hwio->o", patch, m_k) + m_b
            var[0, r, c] = np.einsum("hwi,hwio->o", patch**2, v_k) + v_b
    local, weights = _draws(layer, x, m_k, v_k, m_b, v_b)
    _check_moments(local, mean, var)
    _check_moments(weights, mean, var)
    # what differs: weight sampling correlates two positions that share weights, local does not
    a, b = (0, 1, 1, 0), (0, 1, 2, 0)
    corr = [np.corrcoef(d[(slice(None), *a)], d[(slice(None), *b)])[0, 1] for d in (local,
            weights)]  # fmt: skip
    exact = (np.sum(padded[0, 1:4, 1:4] * padded[0, 1:4, 2:5] * v_k[..., 0]) + v_b[0]) / np.sqrt(
        var[a] * var[b])  # Cov = sum over shared weights x_i x'_i V_i + v_bias
    assert abs(corr[0]) < 5 / np.sqrt(DRAWS)
    assert abs(corr[1] - exact) < 5 / np.sqrt(DRAWS) and abs(exact) > 0.3


# ---------------------------------------------------------------- the ELBO gradient

N, D, PRIOR_PRECISION, NOISE_PRECISION = 32, 3, 4.0, 2.0


@pytest.fixture(scope="module")
def linear_gaussian():
    """``y = W [x; 1] + noise``: one Bayesian dense layer, a fixed N(0, c^2) prior on W
    (c = PRIOR_PRECISION^-1/2), a known noise precision, a mean-field guide; full batch."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(N, 1, 1, D)).astype(np.float32)
    y = (x.reshape(N, D) @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=N)).astype(
        np.float32)
    module = _Linear(rngs=nnx.Rngs(0))
    prior = FlatPrior(fixed_precision=PRIOR_PRECISION)
    bnet = BayesianNetwork.from_module(module, (1, 1, D), prior,
                                       GaussianLikelihood(noise_precision=NOISE_PRECISION))
    init = bnet.init_latents()
    sites = guides.latent_sites(bnet.model, jnp.asarray(x[:2]), jnp.asarray(y[:2]),
                                init_values=init)  # fmt: skip
    guide = guides.MeanFieldGuide(sites, init, init_scale=0.5)
    split = Split(x, y)
    return {est: SVITrainer(bnet, guide, split, batch_size=N, estimator=est)
            for est in ("reparam", "local")}, x.reshape(N, D), y  # fmt: skip


class _Linear(nnx.Module):
    def __init__(self, rngs):
        self.head = nnx.Linear(D, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(x.reshape(x.shape[0], -1))


def _exact_loss(unconstrained, x, y):
    """The negative ELBO per datum in closed form. With ``W = c Z``, ``Z ~ N(m, s^2)`` and
    ``u = [x; 1]``: ``E[log N(y | W u, 1/tau)] = log N(y | c m u, 1/tau) - tau/2 c^2 sum u^2 s^2``
    and ``KL(N(m, s^2) || N(0, 1)) = sum (s^2 + m^2 - 1)/2 - log s``."""
    m = unconstrained["head/z/loc"][0]
    s = jax.nn.softplus(unconstrained["head/z/scale"][0])
    c = PRIOR_PRECISION**-0.5
    u = jnp.concatenate([x, jnp.ones((N, 1))], axis=1)
    tau = NOISE_PRECISION
    loglik = (0.5 * jnp.log(tau / (2 * jnp.pi)) - 0.5 * tau * (y - c * u @ m) ** 2
              - 0.5 * tau * c**2 * (u**2) @ s**2)  # fmt: skip
    kl = jnp.sum(0.5 * (s**2 + m**2 - 1) - jnp.log(s))
    return (kl - jnp.sum(loglik)) / N


@pytest.mark.parametrize("estimator", ["local", "reparam"])
def test_elbo_gradient_is_unbiased(linear_gaussian, estimator):
    trainers, x, y = linear_gaussian
    trainer = trainers[estimator]
    state = trainer.init()
    params = {k: v + 0.3 for k, v in state.params.items()}  # away from the start's symmetry
    gamma = trainer.bnet.full_gamma()

    def loss(unconstrained, key):
        return trainer.elbo.loss(key, trainer.constrain(unconstrained), trainer.model,
                                 trainer.scaled_guide, jnp.asarray(x.reshape(N, 1, 1, D)),
                                 jnp.asarray(y), gamma, N)  # fmt: skip

    keys = jax.random.split(jax.random.key(3), DRAWS)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, keys)
    exact = jax.grad(_exact_loss)(params, x, y)
    for name in ("head/z/loc", "head/z/scale"):
        g = np.asarray(grads[name], np.float64).reshape(DRAWS, -1)
        se = g.std(0) / np.sqrt(DRAWS)
        assert np.all(np.abs(g.mean(0) - np.asarray(exact[name]).ravel()) < 5 * se + 1e-6), name
    # the loss itself is the exact negative ELBO in expectation
    values = np.asarray(jax.jit(jax.vmap(loss, in_axes=(None, 0)))(params, keys), np.float64)
    assert abs(values.mean() - float(_exact_loss(params, x, y))) < 5 * values.std() / np.sqrt(
        DRAWS)


def test_local_estimator_lowers_the_gradient_variance(linear_gaussian):
    """The point of the estimator: per-datum noise averages out over the batch."""
    trainers, x, y = linear_gaussian
    variances = {}
    for estimator, trainer in trainers.items():
        params = {k: v + 0.3 for k, v in trainer.init().params.items()}
        gamma = trainer.bnet.full_gamma()

        def loss(unconstrained, key, trainer=trainer, gamma=gamma):
            return trainer.elbo.loss(key, trainer.constrain(unconstrained), trainer.model,
                                     trainer.scaled_guide, jnp.asarray(x.reshape(N, 1, 1, D)),
                                     jnp.asarray(y), gamma, N)  # fmt: skip

        keys = jax.random.split(jax.random.key(4), 2000)
        grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, keys)
        variances[estimator] = float(np.var(np.asarray(grads["head/z/loc"]), axis=0).sum())
    assert variances["local"] < 0.5 * variances["reparam"]


def test_local_estimator_needs_a_mean_field_guide(linear_gaussian):
    trainers, x, y = linear_gaussian
    bnet = trainers["local"].bnet
    init = bnet.init_latents()
    sites = guides.latent_sites(bnet.model, jnp.asarray(x[:2].reshape(2, 1, 1, D)),
                                jnp.asarray(y[:2]), init_values=init)  # fmt: skip
    with pytest.raises(ValueError, match="mean-field"):
        SVITrainer(bnet, guides.DeltaGuide(sites, init), Split(x.reshape(N, 1, 1, D), y),
                   batch_size=N, estimator="local")  # fmt: skip
    with pytest.raises(ValueError, match="estimator must be"):
        SVITrainer(bnet, guides.MeanFieldGuide(sites, init), Split(x.reshape(N, 1, 1, D), y),
                   batch_size=N, estimator="flipout")  # fmt: skip



# ---------------------------------------------------------------- local on the dense layers only


class _ConvDense(nnx.Module):
    """A 2x2 convolution applied at 4 positions of a 3x3 image, then a dense head: linear in
    each layer's weights, so the output's variance depends on whether the positions share a
    weight draw."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, kernel_size=(2, 2), padding="VALID", rngs=rngs)
        self.head = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(self.conv(x).reshape(x.shape[0], -1))


def test_local_dense_keeps_the_weight_sampling_objective_on_convolutions():
    """``local_dense`` draws the dense head's pre-activations and one shared weight draw for
    the convolution: every datum's likelihood has the distribution weight sampling gives it, so
    the Monte Carlo mean of its loss equals ``reparam``'s within five standard errors, while
    ``local`` (independent positions) measurably does not."""
    rng = np.random.default_rng(5)
    x = (1 + 0.2 * rng.normal(size=(N, 3, 3, 1))).astype(np.float32)  # overlapping patches
    y = rng.normal(size=N).astype(np.float32)  # alike: the positions' covariance is large
    bnet = BayesianNetwork.from_module(_ConvDense(rngs=nnx.Rngs(1)), (3, 3, 1),
                                       FlatPrior(fixed_precision=0.25),
                                       GaussianLikelihood(noise_precision=NOISE_PRECISION))
    init = bnet.init_latents()
    sites = guides.latent_sites(bnet.model, jnp.asarray(x[:2]), jnp.asarray(y[:2]),
                                init_values=init)  # fmt: skip
    guide = guides.MeanFieldGuide(sites, init, init_scale=0.6)
    means, errors = {}, {}
    for estimator in ("reparam", "local_dense", "local"):
        trainer = SVITrainer(bnet, guide, Split(x, y), batch_size=N, estimator=estimator)
        params = {k: v + 0.4 for k, v in trainer.init().params.items()}
        gamma = bnet.full_gamma()

        def loss(unconstrained, key, trainer=trainer, gamma=gamma):
            return trainer.elbo.loss(key, trainer.constrain(unconstrained), trainer.model,
                                     trainer.scaled_guide, jnp.asarray(x), jnp.asarray(y), gamma,
                                     N)  # fmt: skip

        keys = jax.random.split(jax.random.key(6), DRAWS)
        values = np.asarray(jax.jit(jax.vmap(loss, in_axes=(None, 0)))(params, keys), np.float64)
        means[estimator], errors[estimator] = values.mean(), values.std() / np.sqrt(DRAWS)

    def gap(a, b):
        return abs(means[a] - means[b]) / np.hypot(errors[a], errors[b])

    assert gap("local_dense", "reparam") < 5, (means, errors)
    assert gap("local", "reparam") > 8, (means, errors)  # measured: 11.8 standard errors
