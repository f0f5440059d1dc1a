"""Guide distributions against independent references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bmr_jax.bayes.guides import GUIDES, MatrixNormal

pytestmark = pytest.mark.numerics  # scripts/device_check.sh runs these on a device


def _matrix_normal():
    loc = jnp.array([[0.5, -1.0, 2.0], [0.0, 1.0, -0.5]])
    row_scale = jnp.array([0.7, 1.5])  # sqrt(u)
    tril = jnp.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]])  # chol(V)
    return MatrixNormal(loc, row_scale, tril), loc, row_scale, tril


def test_matrix_normal_log_prob_equals_the_vectorised_gaussian():
    d, loc, row_scale, tril = _matrix_normal()
    covariance = np.kron(np.diag(np.square(row_scale)), tril @ tril.T)  # row-major vec
    reference = stats.multivariate_normal(np.asarray(loc).ravel(), covariance)
    value = jnp.array([[0.1, 0.2, 0.3], [-1.0, 0.5, 2.0]])
    np.testing.assert_allclose(d.log_prob(value), reference.logpdf(np.asarray(value).ravel()),
                               rtol=1e-5)  # fmt: skip


def test_matrix_normal_samples_have_the_right_covariance():
    d, loc, row_scale, tril = _matrix_normal()
    draws = np.asarray(d.sample(jax.random.key(0), (200_000,))).reshape(200_000, -1)
    covariance = np.kron(np.diag(np.square(row_scale)), tril @ tril.T)
    # Monte Carlo: 200,000 draws give entries to about 0.01 of scale ~2
    np.testing.assert_allclose(draws.mean(0), np.asarray(loc).ravel(), atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), covariance, atol=0.03)


def test_guide_registry():
    assert GUIDES.names() == ["delta", "mean_field", "row_mvn", "matrix_normal"]
