"""The matrix-normal distribution of a layer's ``Z`` (METHOD.md section 3): rows independent,
each with the same column covariance up to a scale; the family neuron-level BMR reads
(METHOD.md 4.3, ``bmr_jax.bayes.guides.MatrixNormalGuide``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints


class MatrixNormal(dist.Distribution):
    """``vec(Z) ~ N(vec(M), V (x) diag(u))`` for a ``(rows, cols)`` matrix ``Z``: rows are
    independent, row ``i`` is ``N(M_i, u_i V)``. Parameterised by ``loc = M``,
    ``row_scale = sqrt(u)`` and ``col_scale_tril = chol(V)``; ``Z = M + diag(sqrt u) E L'``."""

    arg_constraints = {
        "loc": constraints.real_matrix,
        "row_scale": constraints.positive,
        "col_scale_tril": constraints.lower_cholesky,
    }
    support = constraints.real_matrix
    reparametrized_params = ["loc", "row_scale", "col_scale_tril"]

    def __init__(self, loc, row_scale, col_scale_tril, *, validate_args=None):
        self.loc, self.row_scale, self.col_scale_tril = loc, row_scale, col_scale_tril
        super().__init__(batch_shape=(), event_shape=loc.shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        eps = jax.random.normal(key, sample_shape + self.loc.shape, self.loc.dtype)
        return self.loc + self.row_scale[:, None] * (eps @ self.col_scale_tril.T)

    def log_prob(self, value):
        rows, cols = self.loc.shape
        centred = (value - self.loc) / self.row_scale[:, None]  # rows of N(0, V)
        white = jax.scipy.linalg.solve_triangular(
            self.col_scale_tril, jnp.swapaxes(centred, -1, -2), lower=True
        )
        log_det = cols * jnp.sum(jnp.log(self.row_scale)) + rows * jnp.sum(
            jnp.log(jnp.diagonal(self.col_scale_tril))
        )
        quad = jnp.sum(jnp.square(white), axis=(-2, -1))
        return -0.5 * quad - log_det - 0.5 * rows * cols * jnp.log(2 * jnp.pi)
