"""Reduced priors beyond the Gaussian: a generic Delta F by quadrature, and worked families.

BMR scores a reduced prior ``p~`` against the full prior ``p = N(0, s)`` under a Gaussian
posterior ``q = N(mu, 1/pi)`` by ``Delta F = ln E_q[p~(z) / p(z)]`` (METHOD.md 4.1; Friston
et al. 2019, arXiv:1805.07092, eq. 4). For any ``p~`` with a log density this module
computes it by Gauss-Hermite quadrature, so a new reduced family needs no algebra:

``q / p`` is itself Gaussian up to a constant. With ``pi' = pi - 1/s`` and
``mu' = pi mu / pi'`` (completing the square)::

    q(z) / p(z) = exp(c) N(z; mu', 1/pi'),
    c = 1/2 ln(pi s) + 1/2 pi' mu'^2 - 1/2 pi mu^2 + 1/2 ln(2 pi_const / pi')

    Delta F = c + ln E_{N(mu', 1/pi')}[p~(z)]

and the expectation of the bounded ``p~`` against a Gaussian is a one-dimensional quadrature
(Gauss-Legendre on ``mu' +- 12 sd'``, split at 0 where sparsity priors have their peak or
kink; log-sum-exp over the nodes). The reduced posterior ``q~ ∝ q p~ / p`` comes out of the same
nodes: its mean and variance are the ``p~``-weighted moments of ``N(mu', 1/pi')``. (When the
posterior is wider than the prior, ``pi <= 1/s``, the expectation is taken under ``q`` of
``p~/p`` directly; it exists only if ``p~`` decays faster than ``p``.)

Families (each a small frozen dataclass with ``log_density`` and, where one exists, a
closed-form ``delta_f``):

- :class:`GaussianReduced` ``N(0, v)``: closed form (:func:`bmr_jax.bmr.delta_f`).
- :class:`LaplaceReduced` ``Laplace(0, b)`` and :class:`StudentTReduced`: sparsity-inducing
  slabs through the generic quadrature.
- :class:`RowSpikeAndSlab`: a Gaussian scale-mixture *group* prior over a whole unit (row):
  ``p~(z_row) = rho N(0, 0) + (1 - rho) N(0, v I)``. Because both components are Gaussian the
  evidence is closed form, ``Delta F = ln sum_j w_j exp(sum_k Delta F_k(v_j))``, and the
  posterior probability that the unit belongs to the spike is its responsibility.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp

from bmr_jax.bmr.delta_f import delta_f, delta_f_spike


def _legendre(nodes: int, dtype):
    x, w = np.polynomial.legendre.leggauss(nodes)
    return jnp.asarray(x, dtype), jnp.asarray(np.log(w), dtype)


def delta_f_quadrature(mean, precision, prior_var, log_reduced_density, nodes: int = 64,
                       width: float = 12.0):  # fmt: skip
    """Generic BMR for ``q = N(mean, 1/precision)``, ``p = N(0, prior_var)`` and any reduced
    prior given by ``log_reduced_density(z)`` (elementwise). Arguments broadcast.

    The expectation is taken by Gauss-Legendre quadrature with ``nodes`` points on each of two
    panels covering ``mu' +- width sd'`` and split at 0, where shrinkage priors put their peak
    or kink (a Laplace slab is not smooth there, and Gauss-Hermite converges slowly across
    a kink). Returns ``(delta_f, reduced_mean, reduced_var)``: ``Delta F = ln E_q[p~/p]`` and the
    first two moments of the reduced posterior ``q~ ∝ q p~ / p`` (module docstring).

    Accuracy: to float64 round-off against adaptive quadrature for Laplace and Student-t slabs
    and Gaussians of variance >= 1e-2 (tests/test_reduced.py). A reduced prior much narrower
    than the posterior is resolved by few nodes (about 1 % error for variance 1e-4 against a
    posterior sd of 0.5); when the reduced posterior falls outside the window (Delta F below
    about -40) the result is a lower bound, which every pruning rule reads as "keep".
    The integral exists when the posterior is narrower than the prior (``precision >
    1/prior_var``, the usual case after training); otherwise only if ``p~`` decays faster than
    ``p`` (not for heavy-tailed slabs, whose evidence then diverges).
    """
    dtype = jnp.result_type(mean, precision, prior_var, float)
    mu, pi, s = (jnp.asarray(a, dtype) for a in (mean, precision, prior_var))
    mu, pi, s = jnp.broadcast_arrays(mu, pi, s)
    x, log_w = _legendre(nodes, dtype)
    narrower = pi > 1.0 / s
    # q/p = exp(c) N(mu', 1/pi') when the posterior is narrower than the prior
    pi_r = jnp.where(narrower, pi - 1.0 / s, pi)
    mu_r = jnp.where(narrower, pi * mu / pi_r, mu)
    sd_r = 1.0 / jnp.sqrt(pi_r)
    lo, hi = mu_r - width * sd_r, mu_r + width * sd_r
    cut = jnp.clip(0.0, lo, hi)
    panels = [(lo, cut), (cut, hi)]
    zs, log_ws = [], []
    for a, b in panels:  # nodes mapped from [-1, 1] to [a, b]
        half = 0.5 * (b - a)
        zs.append((0.5 * (a + b))[..., None] + half[..., None] * x)
        log_ws.append(log_w + jnp.log(jnp.maximum(half, jnp.finfo(dtype).tiny))[..., None])
    z, log_wz = jnp.concatenate(zs, axis=-1), jnp.concatenate(log_ws, axis=-1)
    log_gauss = 0.5 * jnp.log(pi_r / (2 * jnp.pi))[..., None] - 0.5 * pi_r[..., None] * jnp.square(
        z - mu_r[..., None]
    )
    log_f = log_reduced_density(z)
    # otherwise E_q[p~/p] directly: the integrand also carries 1/p
    log_p = -0.5 * (jnp.log(2 * jnp.pi * s)[..., None] + jnp.square(z) / s[..., None])
    log_f = jnp.where(narrower[..., None], log_f, log_f - log_p)
    terms = log_wz + log_gauss + log_f
    log_expect = logsumexp(terms, axis=-1)
    c = (0.5 * jnp.log(pi * s) + 0.5 * pi_r * jnp.square(mu_r) - 0.5 * pi * jnp.square(mu)
         + 0.5 * jnp.log(2 * jnp.pi / pi_r))  # fmt: skip
    df = jnp.where(narrower, c + log_expect, log_expect)
    weights = jnp.exp(terms - log_expect[..., None])  # the reduced posterior on the nodes
    reduced_mean = jnp.sum(weights * z, axis=-1)
    reduced_var = jnp.sum(weights * jnp.square(z - reduced_mean[..., None]), axis=-1)
    return df, reduced_mean, reduced_var


class ReducedPrior:
    """A reduced prior family: ``log_density(z)`` elementwise, and ``delta_f(mean, precision,
    prior_var)`` (closed form where the family has one; quadrature otherwise)."""

    def log_density(self, z):
        raise NotImplementedError

    def delta_f(self, mean, precision, prior_var):
        return delta_f_quadrature(mean, precision, prior_var, self.log_density)[0]


@dataclass(frozen=True)
class GaussianReduced(ReducedPrior):
    """``N(0, var)``; ``var = 0`` is the spike."""

    var: float

    def log_density(self, z):
        return -0.5 * (jnp.log(2 * jnp.pi * self.var) + jnp.square(z) / self.var)

    def delta_f(self, mean, precision, prior_var):
        return delta_f(mean, precision, prior_var, self.var)[0]


@dataclass(frozen=True)
class LaplaceReduced(ReducedPrior):
    """``Laplace(0, scale)``: density ``exp(-|z| / b) / (2 b)`` (a sparsity-inducing slab)."""

    scale: float

    def log_density(self, z):
        return -jnp.abs(z) / self.scale - jnp.log(2.0 * self.scale)


@dataclass(frozen=True)
class StudentTReduced(ReducedPrior):
    """Student-t with ``df`` degrees of freedom and ``scale``: a heavy-tailed slab."""

    df: float
    scale: float

    def log_density(self, z):
        nu, b = self.df, self.scale
        return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * jnp.log(nu * jnp.pi * b**2)
                - (nu + 1) / 2 * jnp.log1p(jnp.square(z / b) / nu))  # fmt: skip


@dataclass(frozen=True)
class RowSpikeAndSlab:
    """Group prior over a unit's weights (one row): with probability ``rho`` the whole row is
    0 (spike), else ``N(0, slab_var I)`` -- a Gaussian scale mixture, so closed form.

    ``row_delta_f(mean, precision, prior_var)`` takes ``(rows, cols)`` mean-field posteriors
    and returns per row ``(Delta F, posterior probability of the spike)``::

        Delta F_row = ln[rho exp(sum_k DF_k(0)) + (1 - rho) exp(sum_k DF_k(slab_var))]
        P(spike | data) = rho exp(sum_k DF_k(0)) / exp(Delta F_row)
    """

    rho: float = 0.5
    slab_var: float = 1.0

    def row_delta_f(self, mean, precision, prior_var):
        spike = jnp.sum(delta_f_spike(mean, precision, prior_var)[0], axis=-1)
        if self.slab_var == prior_var:  # the slab is the full prior: Delta F = 0 exactly
            slab = jnp.zeros_like(spike)
        else:
            slab = jnp.sum(delta_f(mean, precision, prior_var, self.slab_var)[0], axis=-1)
        terms = jnp.stack([math.log(self.rho) + spike, math.log1p(-self.rho) + slab])
        df = logsumexp(terms, axis=0)
        return df, jnp.exp(terms[0] - df)


def prune_rows(p_spike, alive_rows, threshold: float = 0.5):
    """Rows to keep: alive and with spike probability below ``threshold``."""
    return jnp.asarray(alive_rows) & (p_spike < threshold)
