"""BMR is exact for conjugate Bayesian linear regression.

``y = X w + e``, ``e ~ N(0, 1/beta)``, prior ``w ~ N(0, diag v)``. The posterior is Gaussian
(precision ``diag(1/v) + beta X'X``) and the log evidence is ``ln N(y; 0, X diag(v) X' +
I/beta)`` in closed form, so the Delta F of any reduced prior must equal the difference of
exact log evidences, and the reduced posterior must equal the exact posterior of the reduced
model. Every subset of inputs is switched off in turn (reduced variance 0), and a partial
shrinkage is checked too. All in float64.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
from scipy import stats
from scipy.linalg import hadamard

from bmr_jax.bmr import delta_f, delta_f_mvn

BETA = 2.0
S = 1.5  # full prior variance


def log_evidence(design, y, prior_var):
    covariance = design @ np.diag(prior_var) @ design.T + np.eye(len(y)) / BETA
    return stats.multivariate_normal(np.zeros(len(y)), covariance).logpdf(y)


def posterior(design, y, prior_var):
    """Exact posterior (mean, precision) for the inputs with positive prior variance."""
    keep = prior_var > 0
    x = design[:, keep]
    precision = np.diag(1 / prior_var[keep]) + BETA * x.T @ x
    return np.linalg.solve(precision, BETA * x.T @ y), precision


def _problem(design, seed):
    rng = np.random.default_rng(seed)
    y = design @ rng.normal(0, np.sqrt(S), design.shape[1])
    return y + rng.normal(0, 1 / np.sqrt(BETA), len(y))


def _reductions(n):
    for removed in itertools.chain.from_iterable(
        itertools.combinations(range(n), k) for k in range(1, n + 1)
    ):
        g = np.full(n, S)
        g[list(removed)] = 0.0
        yield g
    yield np.array([S, 0.3, S, 0.01])[:n]  # partial shrinkage


def test_mean_field_delta_f_is_exact_for_an_orthogonal_design():
    h = hadamard(16).astype(float)
    design = h[:, :4] * np.array([1.0, 0.4, 2.0, 0.1])  # orthogonal columns, several scales
    y = _problem(design, 0)
    full = np.full(4, S)
    mean, precision = posterior(design, y, full)
    # the posterior factorises: off-diagonals of BETA X'X are sums of 16 products of
    # Hadamard entries (+-1) times column scales (<= 2), i.e. exact 0 up to round-off of
    # 16 eps64 * BETA * 2 * 2 per entry (~3e-14), not np.allclose's default atol 1e-8
    off_diagonal = precision - np.diag(np.diag(precision))
    assert np.abs(off_diagonal).max() <= 16 * np.finfo(float).eps * BETA * 4
    pi = np.diag(precision)
    with jax.enable_x64(True):
        for g in _reductions(4):
            df, reduced_mean, reduced_precision = delta_f(mean, pi, S, g)
            exact = log_evidence(design, y, g) - log_evidence(design, y, full)
            # atol for a Delta F near 0: the exact side is a difference of two 16-dim log
            # densities of size ~20, round-off ~16 eps64 * 20 ~ 1e-13; 1e-9 is slack
            np.testing.assert_allclose(float(np.sum(df)), exact, rtol=1e-9, atol=1e-9)
            keep = g > 0
            exact_mean, exact_precision = posterior(design, y, g)
            np.testing.assert_allclose(np.asarray(reduced_mean)[keep], exact_mean, rtol=1e-9)
            np.testing.assert_allclose(
                np.asarray(reduced_precision)[keep], np.diag(exact_precision), rtol=1e-9
            )
            np.testing.assert_array_equal(np.asarray(reduced_mean)[~keep], 0.0)


def test_mvn_delta_f_is_exact_for_a_correlated_design():
    rng = np.random.default_rng(5)
    design = rng.normal(size=(30, 4)) @ np.array(
        [[1.0, 0.7, 0.2, 0.0], [0.0, 0.7, 0.5, 0.1], [0.0, 0.0, 0.6, 0.8], [0.0, 0.0, 0.0, 0.3]]
    )
    y = _problem(design, 1)
    full = np.full(4, S)
    mean, precision = posterior(design, y, full)
    correlation = np.linalg.inv(precision)
    correlation /= np.sqrt(np.outer(np.diag(correlation), np.diag(correlation)))
    assert np.abs(correlation - np.eye(4)).max() > 0.3
    with jax.enable_x64(True):
        for g in _reductions(4):
            df, reduced_mean, reduced_precision = delta_f_mvn(mean, precision, full, g)
            exact = log_evidence(design, y, g) - log_evidence(design, y, full)
            # atol as above: 30-dim log densities of size ~40, round-off ~30 eps64 * 40 ~ 3e-13
            np.testing.assert_allclose(float(df), exact, rtol=1e-9, atol=1e-9)
            keep = g > 0
            exact_mean, exact_precision = posterior(design, y, g)
            np.testing.assert_allclose(np.asarray(reduced_mean)[keep], exact_mean, rtol=1e-8)
            np.testing.assert_allclose(
                np.asarray(reduced_precision)[np.ix_(keep, keep)], exact_precision, rtol=1e-9
            )
            np.testing.assert_array_equal(np.asarray(reduced_mean)[~keep], 0.0)
