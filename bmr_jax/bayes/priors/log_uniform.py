"""The log-uniform prior of Sparse Variational Dropout and its KL approximation.

Molchanov, Ashukha and Vetrov (2017), "Variational dropout sparsifies deep neural networks",
sections 3-4. Every weight has the improper scale-invariant prior ``p(|w|) ∝ 1 / |w|`` and a
Gaussian posterior ``q(w) = N(theta, sigma^2)``, written with the dropout rate
``alpha = sigma^2 / theta^2`` (the additive reparameterisation: ``theta`` and ``sigma`` are the
free parameters, so the gradient's variance does not grow with ``alpha``). The KL divergence
depends on ``alpha`` alone,

    -KL(q || p) = 0.5 log alpha - E_{e ~ N(1, alpha)} log|e| + const,

which has no closed form; the paper fits

    -KL ≈ k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1,
    k1 = 0.63576, k2 = 1.87320, k3 = 1.48695,

whose constant makes ``KL -> 0`` as ``alpha -> inf`` (tested against quadrature of the exact
expression in tests/test_sparse_vd.py, which also measures its error). ``log alpha`` is
clipped to ``[-8, 8]`` as in the paper's code; a weight with ``log alpha > 3`` (dropout rate
above 0.95) is pruned (``bmr_jax.methods.between.sparse_vd``).

In this library's non-centred form (METHOD.md 2) the prior has no scale to learn (it is
scale-invariant), so ``W = gamma * Z`` with ``Z`` log-uniform and the mean-field guide's
``Z ~ N(loc, scale^2)``: ``theta = loc``, ``sigma = scale``. Its biases are a column of the
layer's matrix and get the same prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.kl import kl_divergence

from bmr_jax.bayes.layers import LayerSpec, LayerView
from bmr_jax.bayes.priors.base import Prior

K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al. (2017), eq. 14
LOG_ALPHA_CLIP = 8.0
PRUNE_LOG_ALPHA = 3.0


def log_alpha(loc: jax.Array, scale: jax.Array) -> jax.Array:
    """``log alpha = log sigma^2 - log theta^2``, clipped to ``[-8, 8]``."""
    raw = 2.0 * (jnp.log(scale) - jnp.log(jnp.abs(loc) + 1e-20))
    return jnp.clip(raw, -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)


def neg_kl_approx(log_alpha: jax.Array) -> jax.Array:
    """The paper's approximation of ``-KL(N(theta, alpha theta^2) || log-uniform)``."""
    return K1 * jax.nn.sigmoid(K2 + K3 * log_alpha) - 0.5 * jnp.log1p(jnp.exp(-log_alpha)) - K1


class LogUniform(dist.Distribution):
    """The improper log-uniform density ``p(w) ∝ 1 / |w|`` (batch shape ``shape``). It cannot
    be sampled or normalised; it exists so that a model can name it as a site's prior and the
    ELBO take the KL approximation from :func:`kl_divergence` (registered below)."""

    support = constraints.real

    def __init__(self, shape: tuple[int, ...] = (), *, validate_args=None):
        super().__init__(batch_shape=tuple(shape), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("the log-uniform prior is improper: it cannot be sampled")

    def log_prob(self, value):
        raise NotImplementedError("the log-uniform prior is improper: Sparse VD uses the KL "
                                  "approximation (train.kl: analytic)")  # fmt: skip


@kl_divergence.register(dist.Normal, LogUniform)
def _kl_normal_log_uniform(p, q):
    return -neg_kl_approx(log_alpha(p.loc, p.scale))


@dataclass(frozen=True)
class LogUniformPrior(Prior):
    """Sparse VD's prior (module docstring): no latent scales, ``W = gamma * Z``, ``Z``
    log-uniform elementwise."""

    name: str = "log_uniform"

    def scales(self, view: LayerView):
        return {spec.name: jnp.ones(()) for spec in view.bayesian_layers}

    def init_values(self, view: LayerView):
        return {}

    def z_distribution(self, spec: LayerSpec) -> dist.Distribution:
        return LogUniform(spec.shape).to_event(2)
