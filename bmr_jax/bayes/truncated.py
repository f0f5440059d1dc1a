"""The truncated normal against the uniform on its interval: Structured Bayesian Pruning's
posterior and prior of ``log theta`` (Neklyudov et al. 2017, section 4), their KL, and the
truncated normal's mass and median.

Registered with ``numpyro.distributions.kl.kl_divergence`` so that the mean-field ELBO
(``TraceMeanField_ELBO``) takes the closed form instead of a one-sample estimate.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr, ndtr, ndtri
from multipledispatch import dispatch
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.truncated import TwoSidedTruncatedDistribution


def log_normal_mass(x1, x2):
    """``ln(Phi(x2) - Phi(x1))`` for ``x1 <= x2``, stable in both tails (the upper tail is
    taken as ``Phi(-x1) - Phi(-x2)``)."""
    flip = x1 > 0
    lo, hi = jnp.where(flip, -x2, x1), jnp.where(flip, -x1, x2)
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    return log_hi + jnp.log1p(-jnp.exp(jnp.minimum(log_lo - log_hi, -1e-30)))


def truncated_normal_uniform_kl(mu, sigma, low, high, width=None):
    """``KL(q || p)`` of ``q = N(mu, sigma^2)`` truncated to ``[low, high]`` against the uniform
    ``p`` on the same interval (SBP's KL term; ``width``: of ``p``'s interval when it is wider
    than ``q``'s): ``ln(high - low) - H(q)`` with the entropy
    ``H(q) = ln(sqrt(2 pi e) sigma Z) + (alpha phi(alpha) - beta phi(beta)) / (2 Z)``."""
    alpha, beta = (low - mu) / sigma, (high - mu) / sigma
    log_z = log_normal_mass(alpha, beta)
    log_phi = lambda x: -0.5 * x**2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
    tails = (alpha * jnp.exp(log_phi(alpha) - log_z) - beta * jnp.exp(log_phi(beta) - log_z)) / 2
    entropy = 0.5 * math.log(2 * math.pi * math.e) + jnp.log(sigma) + log_z + tails
    return jnp.log(high - low if width is None else width) - entropy


def truncated_normal_median(loc, scale, low, high):
    """The median of ``N(loc, scale^2)`` truncated to ``[low, high]``:
    ``loc + scale * Phi^-1((Phi(alpha) + Phi(beta)) / 2)``, ``alpha, beta`` the standardised
    bounds."""
    alpha, beta = (low - loc) / scale, (high - loc) / scale
    return loc + scale * ndtri(0.5 * (ndtr(alpha) + ndtr(beta)))


@dispatch(TwoSidedTruncatedDistribution, dist.Uniform)
def kl_divergence(q, p):  # noqa: F811  (numpyro's dispatcher: one more signature)
    if not isinstance(q.base_dist, dist.Normal):
        raise NotImplementedError
    # exact while q's interval lies inside p's (the guide truncates to the prior's support)
    return truncated_normal_uniform_kl(q.base_dist.loc, q.base_dist.scale, q.low, q.high,
                                       width=p.high - p.low)  # fmt: skip


__all__ = ["kl_divergence", "log_normal_mass", "truncated_normal_median",
           "truncated_normal_uniform_kl"]
