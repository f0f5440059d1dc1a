"""Reduced priors beyond the Gaussian: the generic quadrature Delta F against closed forms and
scipy's adaptive quadrature, and the group spike-and-slab against an exact conjugate model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from bmr_jax.bmr import delta_f
from bmr_jax.bmr.reduced import (
    GaussianReduced,
    LaplaceReduced,
    RowSpikeAndSlab,
    StudentTReduced,
    delta_f_quadrature,
)

# (posterior mean, posterior precision); the full prior is N(0, 1)
CASES = [(0.0, 4.0), (0.05, 100.0), (0.3, 100.0), (1.0, 1e4), (0.0, 1e4), (0.01, 1e6),
         (2.0, 2.0), (-0.7, 30.0)]  # fmt: skip


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def _scipy_delta_f(mu, pi, s, log_reduced):
    sd = 1 / np.sqrt(pi)

    def integrand(z):  # q p~ / p
        return np.exp(stats.norm.logpdf(z, mu, sd) + log_reduced(z)
                      - stats.norm.logpdf(z, 0, np.sqrt(s)))  # fmt: skip

    lo, hi = mu - 12 * sd, mu + 12 * sd
    points = [0.0] if lo < 0 < hi else None
    value, _ = integrate.quad(integrand, lo, hi, points=points, limit=500, epsabs=0,
                              epsrel=1e-12)  # fmt: skip
    return np.log(value)


@pytest.mark.parametrize("var, rtol", [(1e-4, 2e-2), (1e-2, 1e-6), (0.05, 1e-9), (0.5, 1e-9)])
def test_quadrature_equals_the_gaussian_closed_form(var, rtol):
    # where the reduced posterior falls outside the quadrature window (closed form below -40)
    # the quadrature must give a lower bound (every rule still reads it as "keep")
    mu, pi = np.array(CASES).T
    df, mean, variance = delta_f_quadrature(mu, pi, 1.0, GaussianReduced(var).log_density)
    closed, closed_mean, closed_precision = delta_f(mu, pi, 1.0, var)
    inside = closed > -40
    # atol, for a Delta F near 0 (here every |closed| >= 0.09, so rtol decides): both sides
    # sum terms up to pi mu^2 = 1e4 in float64, round-off ~eps64 * 1e4 = 2e-12 each
    # (measured |df - closed| <= 2e-12 for var >= 0.05); 1e-10
    np.testing.assert_allclose(df[inside], closed[inside], rtol=rtol, atol=1e-10)
    assert np.all(df[~inside] <= closed[~inside]) and np.all(df[~inside] < -40)
    if rtol < 1e-6:
        # mu = 0 cases have a reduced mean of exactly 0 in closed form; the quadrature's is a
        # symmetric sum over 128 nodes of weights * z (|z| <= 12 sd <= 6) that cancels to a
        # few 128 eps64 * 6 = 1.7e-13: atol 1e-12
        np.testing.assert_allclose(mean, closed_mean, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(variance, 1 / closed_precision, rtol=1e-7)


@pytest.mark.parametrize(
    "family, log_reduced",
    [
        (LaplaceReduced(0.1), lambda z: stats.laplace.logpdf(z, 0, 0.1)),
        (LaplaceReduced(1.5), lambda z: stats.laplace.logpdf(z, 0, 1.5)),
        (StudentTReduced(3.0, 0.2), lambda z: stats.t.logpdf(z, 3.0, 0, 0.2)),
    ],  # fmt: skip
    ids=["laplace-0.1", "laplace-1.5", "student-t"],
)
def test_quadrature_against_scipy_for_sparsity_slabs(family, log_reduced):
    mu, pi = np.array(CASES).T
    df = family.delta_f(mu, pi, 1.0)
    expected = [_scipy_delta_f(m, p, 1.0, log_reduced) for m, p in CASES]
    # atol for Delta F near 0: scipy's epsrel 1e-12 on the integral is 1e-12 on its log; the
    # Gauss-Legendre sum's round-off is ~128 eps64 times log terms of size <= ~1e2 (~3e-12)
    np.testing.assert_allclose(df, expected, rtol=1e-8, atol=1e-9)


def test_float32_jit_and_broadcasting():
    mu = jnp.linspace(-1, 1, 12, dtype=jnp.float32).reshape(3, 4)
    pi = jnp.full((1, 4), 50.0, jnp.float32)
    fn = jax.jit(lambda m, p: LaplaceReduced(0.2).delta_f(m, p, 1.0))
    df32 = fn(mu, pi)
    assert df32.dtype == jnp.float32 and df32.shape == (3, 4)
    df64 = LaplaceReduced(0.2).delta_f(np.asarray(mu, np.float64), np.asarray(pi, np.float64), 1.0)
    # atol for entries near 0: float32 log-sum-exp over 128 nodes of log terms of size
    # <= ~50 (pi mu^2 = 50 at |mu| = 1): ~128 eps32 * 50 / sqrt(128) (random-walk rounding)
    # ~7e-5 at worst; 1e-4
    np.testing.assert_allclose(df32, df64, rtol=1e-4, atol=1e-4)


def test_row_spike_and_slab_is_the_exact_conjugate_evidence():
    # one unit with K weights in a linear-Gaussian model with an orthogonal design: the exact
    # posterior under the full prior N(0, s I) is mean-field, so BMR must be exact
    rng = np.random.default_rng(3)
    n, k, s, noise = 40, 5, 1.0, 0.5
    q, _ = np.linalg.qr(rng.normal(size=(n, k)))
    x = q * np.array([3.0, 1.0, 0.5, 2.0, 0.2])  # orthogonal columns, X'X diagonal
    for w_true in (np.zeros(k), np.array([0.8, -0.5, 0.0, 0.3, 0.1])):
        y = x @ w_true + noise * rng.normal(size=n)
        d = np.sum(x * x, axis=0)
        precision = 1 / s + d / noise**2
        mean = (x.T @ y / noise**2) / precision
        for rho, slab in ((0.5, 1.0), (0.2, 0.3)):
            df, p_spike = RowSpikeAndSlab(rho, slab).row_delta_f(mean[None], precision[None], s)
            log_p = stats.multivariate_normal.logpdf(
                y, np.zeros(n), s * x @ x.T + noise**2 * np.eye(n)
            )
            log_spike = np.log(rho) + stats.multivariate_normal.logpdf(
                y, np.zeros(n), noise**2 * np.eye(n)
            )
            log_slab = np.log1p(-rho) + stats.multivariate_normal.logpdf(
                y, np.zeros(n), slab * x @ x.T + noise**2 * np.eye(n)
            )
            log_reduced = np.logaddexp(log_spike, log_slab)
            # Delta F (here 0.27 to 1.9) can be near 0 for other data: the log evidences are
            # of size ~50, so their difference carries ~eps64 * 50 * 40 (n-dim logpdf) ~ 5e-13
            np.testing.assert_allclose(df[0], log_reduced - log_p, rtol=1e-9, atol=1e-9)
            # the spike probability (here 8e-5 to 0.93) is exp(a log difference with the
            # same ~5e-13 error): absolute error <= p * 5e-13 <= 5e-13, so atol 1e-12
            np.testing.assert_allclose(p_spike[0], np.exp(log_spike - log_reduced), rtol=1e-8,
                                       atol=1e-12)  # fmt: skip


def test_unit_rule_decides_as_the_group_prior_says():
    from bmr_jax import methods
    from bmr_jax.bmr import UnitSpikeAndSlab, delta_f_spike

    rng = np.random.default_rng(4)
    mean = rng.normal(0, 0.3, (50, 8)) * (rng.uniform(size=(50, 1)) > 0.5)  # half the rows ~ 0
    precision = np.exp(rng.normal(3, 1, (50, 8)))
    df = delta_f_spike(mean, precision, 1.0)[0]
    for rho in (0.2, 0.5, 0.9):
        masks, _ = UnitSpikeAndSlab(rho)({"a": df}, {"a": np.ones((50, 8), bool)}, {"a": True}, 2)
        _, p_spike = RowSpikeAndSlab(rho, 1.0).row_delta_f(mean, precision, 1.0)
        np.testing.assert_array_equal(masks["a"][:, 0], np.asarray(p_spike) <= 0.5)
        assert np.all(masks["a"] == masks["a"][:, :1])  # whole rows
    assert 0 < masks["a"][:, 0].mean() < 1
    rule = methods.configured("bmr_ss", methods.BmrSettings(rule="unit_spike_and_slab")).rule
    assert rule.name == "unit_spike_and_slab"
