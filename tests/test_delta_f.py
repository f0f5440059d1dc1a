"""The BMR kernels against independent references: numerical quadrature of ln E_q[p~/p],
Monte Carlo, the Savage-Dickey ratio, and dense linear algebra on the vectorised problem."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, stats

from bmr_jax.bmr import delta_f, delta_f_matrix_normal_rows, delta_f_mvn, group_delta_f

pytestmark = pytest.mark.numerics  # scripts/device_check.sh runs these on a device

MEANS = (0.0, 0.3, -2.5)
PRECISIONS = (1e-3, 0.5, 20.0, 1e6)
PRIOR_VARS = (1.0, 0.04)
REDUCTIONS = (0.0, 1e-8, 0.01, 0.5, 1.0)  # reduced_var as a fraction of prior_var
GRID = list(itertools.product(MEANS, PRECISIONS, PRIOR_VARS, REDUCTIONS))


def quadrature_delta_f(mu, pi, s, g):
    """ln int q(w) p~(w) / p(w) dw by adaptive quadrature (float64); g = 0: q(0) / p(0)."""
    sd = 1 / np.sqrt(pi)
    if g == 0:
        return stats.norm.logpdf(0, mu, sd) - stats.norm.logpdf(0, 0, np.sqrt(s))

    def log_f(w):
        return (stats.norm.logpdf(w, mu, sd) + stats.norm.logpdf(w, 0, np.sqrt(g))
                - stats.norm.logpdf(w, 0, np.sqrt(s)))  # fmt: skip

    peak = optimize.minimize_scalar(lambda w: -log_f(w), bracket=(-1, 1)).x
    width = 1 / np.sqrt(pi + 1 / g - 1 / s)  # the integrand is Gaussian in w
    top = log_f(peak)
    value, _ = integrate.quad(lambda w: np.exp(log_f(w) - top), peak - 40 * width,
                              peak + 40 * width, points=[peak], limit=200, epsabs=0,
                              epsrel=1e-12)  # fmt: skip
    return top + np.log(value)


# quad reports round-off for the sharpest integrands (pi = 1e6, g = 1e-8 s); the comparison
# below still holds to 1e-8
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("mu, pi, s, fraction", GRID)
def test_delta_f_matches_quadrature_in_float64(mu, pi, s, fraction):
    g = fraction * s
    reference = quadrature_delta_f(mu, pi, s, g)
    with jax.enable_x64(True):
        df, _, _ = delta_f(jnp.float64(mu), jnp.float64(pi), jnp.float64(s), jnp.float64(g))
        assert df.dtype == jnp.float64
        # g = s gives Delta F = 0 exactly. atol: the closed form sums terms up to
        # pi mu^2 = 6.25e6 (pi = 1e6, mu = -2.5), so its float64 round-off is ~eps64 * 6e6
        # = 1.4e-9; quad's epsrel = 1e-12 adds 1e-12 to the log. 1e-8 covers both.
        np.testing.assert_allclose(float(df), reference, rtol=1e-8, atol=1e-8)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("mu, pi, s, fraction", GRID)
def test_delta_f_in_float32_is_finite_and_accurate(mu, pi, s, fraction):
    g = fraction * s
    reference = quadrature_delta_f(mu, pi, s, g)
    df, mean, precision = delta_f(np.float32(mu), np.float32(pi), np.float32(s), np.float32(g))
    assert df.dtype == jnp.float32
    assert np.isfinite(df) and np.isfinite(mean) and np.isfinite(precision)
    # Delta F = 0 exactly at g = s. atol: float32 round-off of the log terms, |ln(s pi)| <=
    # 14, is ~2 eps32 * 14 = 3.3e-6; 2e-5 covers it with the inputs' own float32 rounding
    # (relative 6e-8 on pi and mu, i.e. 6e-8 * pi mu^2 absolute, <= 2e-5 where pi mu^2 <= 300;
    # the larger values are covered by rtol)
    np.testing.assert_allclose(float(df), reference, rtol=2e-6, atol=2e-5)


def test_spike_limit_is_continuous_and_exact():
    mu, pi, s = 0.7, 3.0, 1.0
    spike, mean, precision = delta_f(mu, pi, s, 0.0)
    np.testing.assert_allclose(spike, 0.5 * (np.log(pi * s) - pi * mu**2), rtol=1e-6)
    assert float(mean) == 0.0 and float(precision) == np.finfo(np.float32).max
    near, _, _ = delta_f(mu, pi, s, 1e-12)
    np.testing.assert_allclose(near, spike, rtol=1e-6)


def test_extreme_precisions_stay_finite():
    for pi in (1e-30, 1e-20, 1e20, 1e30):
        for g in (0.0, 1e-6, 0.5):
            values = delta_f(np.float32(0.01), np.float32(pi), np.float32(1.0), np.float32(g))
            assert all(np.isfinite(np.asarray(v)) for v in values), (pi, g, values)


def test_delta_f_matches_monte_carlo():
    """E_q[p~/p] by 2,000,000 draws from q, within 4 standard errors."""
    rng = np.random.default_rng(0)
    for mu, pi, s, g in [(0.3, 2.0, 1.0, 0.3), (-1.0, 10.0, 1.0, 0.05), (0.0, 1.0, 0.5, 0.2)]:
        w = rng.normal(mu, 1 / np.sqrt(pi), 2_000_000)
        ratio = stats.norm.pdf(w, 0, np.sqrt(g)) / stats.norm.pdf(w, 0, np.sqrt(s))
        estimate, error = ratio.mean(), ratio.std() / np.sqrt(len(w))
        df, _, _ = delta_f(mu, pi, s, g)
        assert abs(np.exp(float(df)) - estimate) < 4 * error


def test_reduced_posterior_is_the_normalised_product():
    """q~ ∝ q p~ / p: a Gaussian whose log density is the quadratic log q + log p~ - log p."""
    mu, pi, s, g = 0.8, 5.0, 1.0, 0.2
    _, mean, precision = delta_f(mu, pi, s, g)
    w = np.linspace(-1, 2, 7)
    log_ratio = (stats.norm.logpdf(w, mu, pi**-0.5) + stats.norm.logpdf(w, 0, g**0.5)
                 - stats.norm.logpdf(w, 0, s**0.5))  # fmt: skip
    reduced = stats.norm.logpdf(w, float(mean), float(precision) ** -0.5)
    difference = log_ratio - reduced  # constant (= Delta F) if q~ is right
    # float32 mean/precision: a relative error of ~1e-7 on precision 5.8 moves the quadratic
    # term (w - mean)^2 precision / 2 (<= 6 on this grid) by <= 1e-6; atol 1e-5
    np.testing.assert_allclose(difference, difference[0], atol=1e-5)


def test_elementwise_broadcasting_jit_and_vmap():
    means = jnp.linspace(-1, 1, 12).reshape(3, 4)
    df, _, _ = jax.jit(delta_f)(means, 2.0, 1.0, jnp.array([0.0, 0.1, 0.5, 1.0]))
    assert df.shape == (3, 4)
    looped = jax.vmap(lambda m: delta_f(m, 2.0, 1.0, jnp.array([0.0, 0.1, 0.5, 1.0]))[0])(means)
    # column 3 (g = s) is 0 up to round-off: 1/2 (ln s + ln pi - ln(pi)) cancels two float32
    # logs of size ln 2 = 0.69, each within 1 ulp (6e-8), so |df| <= 6e-8; jit and vmap may
    # round differently, so atol 2e-7 on every entry (the others are ~0.3 to 1.4, rtol)
    np.testing.assert_allclose(df, looped, rtol=1e-6, atol=2e-7)
    np.testing.assert_allclose(df[:, 3], 0.0, atol=1e-7)  # g = s: nothing changes


# ----------------------------------------------------------------------------- MVN


def _random_precision(rng, n):
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n) * 0.5


def _mvn_reference(mu, P, s, g):
    """Delta F by the textbook Gaussian integral: ln E_q[p~/p] =
    ln N(0; mu, P^-1 + ...) written as ratios of normalising constants, in float64."""
    Pt = P + np.diag(1 / g - 1 / s)
    mut = np.linalg.solve(Pt, P @ mu)
    return (0.5 * np.linalg.slogdet(P)[1] - 0.5 * np.linalg.slogdet(Pt)[1]
            - 0.5 * np.log(g).sum() + 0.5 * np.log(s).sum() - 0.5 * mu @ P @ mu
            + 0.5 * (P @ mu) @ mut), mut, Pt  # fmt: skip


def test_mvn_matches_dense_reference_and_monte_carlo():
    rng = np.random.default_rng(1)
    n = 5
    P = _random_precision(rng, n)
    mu = rng.normal(size=n)
    s = np.full(n, 1.3)
    g = np.array([1.3, 0.2, 0.7, 1.3, 0.05])
    reference, mut, Pt = _mvn_reference(mu, P, s, g)
    with jax.enable_x64(True):
        df, mean, precision = delta_f_mvn(mu, P, s, g)
        np.testing.assert_allclose(float(df), reference, rtol=1e-10)
        np.testing.assert_allclose(mean, mut, rtol=1e-10)
        np.testing.assert_allclose(precision, Pt, rtol=1e-10)
    w = rng.multivariate_normal(mu, np.linalg.inv(P), 1_000_000)
    log_ratio = (stats.multivariate_normal(np.zeros(n), np.diag(g)).logpdf(w)
                 - stats.multivariate_normal(np.zeros(n), np.diag(s)).logpdf(w))  # fmt: skip
    ratio = np.exp(log_ratio)
    assert abs(np.exp(reference) - ratio.mean()) < 4 * ratio.std() / np.sqrt(len(w))


def test_mvn_with_removed_inputs_is_the_marginal_evidence():
    """Removing inputs (g = 0) equals the limit g -> 0 and gives the conditional posterior."""
    rng = np.random.default_rng(2)
    n = 4
    P = _random_precision(rng, n)
    mu = rng.normal(size=n)
    s = np.ones(n)
    g = np.array([0.0, 1.0, 0.0, 0.4])
    with jax.enable_x64(True):
        df, mean, precision = delta_f_mvn(mu, P, s, g)
        near, near_mean, _ = delta_f_mvn(mu, P, s, np.where(g == 0, 1e-13, g))
        np.testing.assert_allclose(float(df), float(near), rtol=1e-6)
        np.testing.assert_allclose(mean, near_mean, atol=1e-6)
        assert mean[0] == 0.0 and mean[2] == 0.0 and np.isfinite(np.asarray(precision)).all()
    # independent check: ln q(w_R = 0) - ln p(w_R = 0) marginals, then the kept inputs' BMR
    cov = np.linalg.inv(P)
    removed, kept = [0, 2], [1, 3]
    log_q0 = stats.multivariate_normal(mu[removed], cov[np.ix_(removed, removed)]).logpdf([0, 0])
    log_p0 = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf([0, 0])
    # q(w_K | w_R = 0): conditional Gaussian, precision P_KK
    P_kk = P[np.ix_(kept, kept)]
    cond_mean = mu[kept] + np.linalg.solve(P_kk, P[np.ix_(kept, removed)] @ mu[removed])
    rest, _, _ = _mvn_reference(cond_mean, P_kk, s[kept], g[kept])
    np.testing.assert_allclose(float(df), log_q0 - log_p0 + rest, rtol=1e-8)


def test_mvn_float32_is_finite():
    rng = np.random.default_rng(3)
    P = _random_precision(rng, 6).astype(np.float32)
    mu = rng.normal(size=6).astype(np.float32)
    df, mean, precision = delta_f_mvn(mu, P, 1.0, np.zeros(6, np.float32))
    assert df.dtype == jnp.float32 and np.isfinite(df)
    assert np.all(mean == 0) and np.isfinite(np.asarray(precision)).all()


# ------------------------------------------------------------------------ matrix-normal


def test_matrix_normal_rows_match_mvn_on_the_vectorised_problem():
    rng = np.random.default_rng(4)
    rows, cols = 3, 4
    M = rng.normal(size=(rows, cols))
    u = rng.uniform(0.05, 0.3, rows)
    a = rng.normal(size=(cols, cols))
    V = a @ a.T / cols + 0.1 * np.eye(cols)
    gamma2 = np.array([0.0, 0.3, 1.0])  # remove unit 0, shrink unit 1, keep unit 2
    with jax.enable_x64(True):
        ours = delta_f_matrix_normal_rows(M, u, V, 1.0, gamma2)
        # the whole layer as one vector with covariance diag(u) (x) V (row-major vec)
        precision = np.linalg.inv(np.kron(np.diag(u), V))
        whole, _, _ = delta_f_mvn(M.ravel(), precision, 1.0, np.repeat(gamma2, cols))
        np.testing.assert_allclose(float(np.sum(ours)), float(whole), rtol=1e-9)
        for i in range(rows):  # and each row on its own
            P = np.linalg.inv(u[i] * V)
            row, _, _ = delta_f_mvn(M[i], P, 1.0, np.full(cols, gamma2[i]))
            # unit 2 is kept (gamma^2 = s): Delta F = 0 exactly, and both sides are sums of
            # terms that cancel (1/2 ln|P| - 1/2 ln|A| with A = P; -1/2 mu'P mu + 1/2 c'A^-1 c
            # with c = P mu). Their float64 round-off is a few n eps64 (n = cols = 4, Cholesky
            # and triangular solves) times the size of the terms, so atol = 100 eps64 times
            # |ln|P|| + mu'P mu (about 50 here: atol ~1e-12; measured |difference| ~2e-15)
            terms = abs(np.linalg.slogdet(P)[1]) + M[i] @ P @ M[i]
            atol = 100 * np.finfo(np.float64).eps * terms
            np.testing.assert_allclose(float(ours[i]), float(row), rtol=1e-9, atol=atol)
    # the kept row through the eigenbasis: a sum of cols elementwise terms
    # 1/2 (ln s + ln pi_k - ln(g pi_k)) with |ln pi_k| <= 5, each exact to a few eps64
    assert float(ours[2]) == pytest.approx(0.0, abs=1e-12)


def test_group_delta_f_sums_rows():
    rows = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(group_delta_f(rows, jnp.array([0, 0, 1, 1]), 2), [3.0, 7.0])


def test_spike_fast_path_equals_the_general_formula_at_zero():
    rng = np.random.default_rng(7)
    mean = rng.normal(size=1000).astype(np.float32)
    precision = np.exp(rng.normal(0, 3, 1000)).astype(np.float32)
    fast = delta_f(mean, precision, 1.0, 0)  # Python 0: spike formula
    general = delta_f(mean, precision, 1.0, np.zeros(1000, np.float32))  # array: general path
    for a, b in zip(fast, general, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_mvn_vmaps_over_rows():
    rng = np.random.default_rng(8)
    precisions = np.stack([_random_precision(rng, 3) for _ in range(4)]).astype(np.float32)
    means = rng.normal(size=(4, 3)).astype(np.float32)
    g = np.array([0.0, 0.5, 1.0], np.float32)
    batched = jax.vmap(lambda m, p: delta_f_mvn(m, p, 1.0, g))(means, precisions)
    for i in range(4):
        single = delta_f_mvn(means[i], precisions[i], 1.0, g)
        # the removed input's reduced mean is exactly 0 (sqrt(0) * finite) on both paths; the
        # other entries (Delta F, means, precision entries, all of size <= ~10 bar the spike's
        # float32 max) may differ by float32 reordering in the batched Cholesky and solves, a
        # few n eps32 (n = 3) of terms <= 10: <= ~4e-6, so atol 1e-5 besides rtol
        for a, b in zip(batched, single, strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-5)
