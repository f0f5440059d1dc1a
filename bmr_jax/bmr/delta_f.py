"""Closed-form Bayesian model reduction for Gaussian posteriors (METHOD.md sections 4.1-4.3).

Full model: prior ``p``, posterior ``q``; reduced model: prior ``p~``, same likelihood. Then
``Delta F = F~ - F = ln E_q[p~ / p]`` and ``q~ ∝ q p~ / p`` (Friston & Penny 2011; Friston et
al. 2019, "Bayesian model reduction", arXiv:1805.07092). ``Delta F > 0``: the reduced model
has more evidence.

All functions are pure, jit- and vmap-able, and work in the dtype of their inputs (float32 or
float64). ``reduced_var == 0`` is the exact spike limit (the Savage-Dickey ratio), finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _big(dtype) -> jax.Array:
    """The precision reported for a spike (reduced variance 0): the largest finite float."""
    return jnp.asarray(jnp.finfo(dtype).max, dtype)


def delta_f(mean, precision, prior_var, reduced_var):
    """Elementwise BMR for ``q = N(mean, 1/precision)``, ``p = N(0, prior_var)`` and
    ``p~ = N(0, reduced_var)`` (METHOD.md 4.1). Arguments broadcast against each other.

    With ``g = reduced_var``, ``s = prior_var``, ``pi = precision``, ``mu = mean``::

        pi~ = pi + 1/g - 1/s,   mu~ = pi mu / pi~
        Delta F = 1/2 [ln(s/g) + ln(pi/pi~) - pi mu^2 + (pi mu)^2 / pi~]

    computed through ``d = g pi~ = 1 + g (pi - 1/s)``, which is finite at ``g = 0``::

        Delta F = 1/2 [ln(s pi) - log1p(g (pi - 1/s)) - mu^2 (1 - g/s) pi / d]

    so that ``g = 0`` gives the spike limit ``1/2 [ln(s pi) - pi mu^2]`` exactly, ``log1p`` keeps
    small reductions accurate (``ln d`` switches to ``ln((1 - g/s) + g pi)`` when ``g`` nears
    ``s``, where ``1 + g (pi - 1/s)`` would cancel), and ``pi / d = 1 / (g + (1 - g/s) / pi)``
    neither overflows for huge precisions nor loses tiny ones.

    A ``reduced_var`` given as the Python number 0 (the spike every pruning rule uses) takes
    the spike formula directly, one logarithm per weight instead of three.

    Returns:
      ``(delta_f, reduced_mean, reduced_precision)``; where ``reduced_var == 0`` the reduced
      mean is 0 and the reduced precision is the largest finite float of the dtype (a spike).
    """
    if isinstance(reduced_var, int | float) and reduced_var == 0:
        return delta_f_spike(mean, precision, prior_var)
    mean, precision, prior_var, reduced_var = _promote(mean, precision, prior_var, reduced_var)
    g, s, pi, mu = reduced_var, prior_var, precision, mean
    shrink = 1.0 - g / s  # 1 - g/s
    # d = 1 + g (pi - 1/s) = (1 - g/s) + g pi: log1p where g (pi - 1/s) is small, else the
    # second form, which has no cancellation when g approaches s (d -> g pi)
    step = g * (pi - 1.0 / s)
    log_d = jnp.where(jnp.abs(step) < 0.5, jnp.log1p(step), jnp.log(shrink + g * pi))
    ratio = 1.0 / (g + shrink / pi)  # pi / d
    df = 0.5 * (jnp.log(s) + jnp.log(pi) - log_d - jnp.square(mu) * shrink * ratio)
    reduced_mean = mu * g * ratio  # pi mu / pi~ = mu g pi / d
    safe_g = jnp.where(g > 0, g, 1.0)
    reduced_precision = jnp.where(g > 0, pi + 1.0 / safe_g - 1.0 / s, _big(df.dtype))
    return df, reduced_mean, reduced_precision


def delta_f_spike(mean, precision, prior_var):
    """:func:`delta_f` for the spike ``reduced_var = 0`` (METHOD.md 4.1's limit):
    ``Delta F = 1/2 [ln(s pi) - pi mu^2]``, reduced mean 0, reduced precision the largest
    finite float. Prune when the squared z-score ``pi mu^2`` is below ``ln(s pi)``."""
    mean, precision, prior_var = _promote(mean, precision, prior_var)
    df = 0.5 * (jnp.log(prior_var * precision) - precision * jnp.square(mean))
    return df, jnp.zeros_like(df), jnp.full_like(df, _big(df.dtype))


def _promote(*arrays):
    dtype = jnp.result_type(*arrays, float)
    return jnp.broadcast_arrays(*(jnp.asarray(a, dtype) for a in arrays))


def delta_f_mvn(mean, precision_matrix, prior_var, reduced_var):
    """BMR for one row with a full-covariance posterior (METHOD.md 4.2).

    ``q = N(mu, P^-1)``, ``p = N(0, diag s)``, ``p~ = N(0, diag g)``; entries of ``g`` may be 0
    (that input removed). With ``G = diag g``, ``b = P mu`` and the symmetric positive definite
    ``A = G^1/2 P G^1/2 + I - G S^-1`` (``|A| = |P~| |G|``, finite at ``g = 0``)::

        P~ = P + diag(1/g - 1/s),   mu~ = P~^-1 P mu = G^1/2 A^-1 G^1/2 b
        Delta F = 1/2 ln|P| - 1/2 ln|A| + 1/2 sum ln s - 1/2 mu'b + 1/2 c'A^-1 c,  c = G^1/2 b

    which equals METHOD.md's ``1/2 ln|P| - 1/2 ln|P~| - 1/2 sum ln g + 1/2 sum ln s
    - 1/2 mu'P mu + 1/2 (P mu)' mu~`` for positive ``g``.

    Args:
      mean: ``(n,)``; precision_matrix: ``(n, n)``; prior_var, reduced_var: ``(n,)`` or scalars.

    Returns:
      ``(delta_f, reduced_mean, reduced_precision_matrix)``. Removed inputs (``g = 0``) have
      reduced mean 0 and the largest finite float on their diagonal (a spike).
    """
    n = mean.shape[-1]
    dtype = jnp.result_type(mean, precision_matrix, prior_var, reduced_var, float)
    mu = jnp.asarray(mean, dtype)
    P = jnp.asarray(precision_matrix, dtype)
    s = jnp.broadcast_to(jnp.asarray(prior_var, dtype), (n,))
    g = jnp.broadcast_to(jnp.asarray(reduced_var, dtype), (n,))
    root_g = jnp.sqrt(g)
    b = P @ mu
    A = root_g[:, None] * P * root_g[None, :] + jnp.diag(1.0 - g / s)
    chol_P = jnp.linalg.cholesky(P)
    chol_A = jnp.linalg.cholesky(A)
    logdet_P = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_P)))
    logdet_A = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_A)))
    c = root_g * b
    A_inv_c = jax.scipy.linalg.cho_solve((chol_A, True), c)
    df = 0.5 * (logdet_P - logdet_A + jnp.sum(jnp.log(s)) - mu @ b + c @ A_inv_c)
    reduced_mean = root_g * A_inv_c
    safe_g = jnp.where(g > 0, g, 1.0)
    shift = jnp.where(g > 0, 1.0 / safe_g - 1.0 / s, 0.0)
    reduced_precision = P + jnp.diag(shift)
    diagonal = jnp.where(g > 0, jnp.diagonal(reduced_precision), _big(dtype))
    reduced_precision = reduced_precision.at[jnp.arange(n), jnp.arange(n)].set(diagonal)
    return df, reduced_mean, reduced_precision


def delta_f_matrix_normal_rows(mean, row_var, col_cov, prior_var, reduced_row_var):
    """Neuron-wise BMR for a matrix-normal posterior (METHOD.md 4.3).

    Posterior ``vec(W) ~ N(vec(M), V (x) diag(u))`` (rows independent, row ``i`` is
    ``N(M_i, u_i V)``), full prior ``N(0, s)`` on every entry, reduced prior variance
    ``gamma_i^2`` on every entry of row ``i`` (0 removes the unit). With ``V = Q Lambda Q'``
    the isotropic priors are unchanged by the rotation ``Q``, so in rotated coordinates each row
    is a diagonal Gaussian ``N(Q'M_i, u_i Lambda)`` and the row's Delta F is a sum of elementwise
    terms (:func:`delta_f` with precision ``1 / (u_i lambda_k)``) -- one eigendecomposition of
    ``V`` per layer instead of a determinant per row.

    Args:
      mean: ``(rows, cols)``; row_var: ``u``, ``(rows,)``; col_cov: ``V``, ``(cols, cols)``;
      prior_var: ``s`` (scalar); reduced_row_var: ``gamma^2``, ``(rows,)``.

    Returns:
      ``(rows,)`` Delta F of each row's reduction.
    """
    eigenvalues, Q = jnp.linalg.eigh(col_cov)
    rotated = mean @ Q  # (Q' M_i) for every row
    precision = 1.0 / (row_var[:, None] * eigenvalues[None, :])
    df, _, _ = delta_f(rotated, precision, prior_var, reduced_row_var[:, None])
    return jnp.sum(df, axis=-1)


def delta_f_matrix_normal_columns(mean, row_var, col_cov, prior_var, columns):
    """Delta F of removing the input ``columns`` from every row of a matrix-normal posterior
    (METHOD.md 4.3; e.g. the output projection's columns that read one attention head).

    Row ``i`` is ``N(M_i, u_i V)``; the full prior is ``N(0, s)`` on every entry and the
    reduced prior sets the columns ``S`` to 0. That change touches only the coordinates ``S``,
    so each row's Delta F is that of its marginal ``N(M_iS, u_i V_SS)`` with every input removed
    (METHOD.md 4.2 at ``g = 0``); with ``V_SS = Q Lambda Q'`` it is a sum of elementwise spike
    terms (:func:`delta_f`) in rotated coordinates, and rows are independent, so the total is
    the sum over rows.

    Args:
      mean: ``(rows, cols)``; row_var: ``(rows,)``; col_cov: ``(cols, cols)``; prior_var: ``s``;
      columns: integer indices ``S`` (static).

    Returns:
      The scalar Delta F.
    """
    eigenvalues, Q = jnp.linalg.eigh(col_cov[jnp.ix_(columns, columns)])
    rotated = mean[:, columns] @ Q
    precision = 1.0 / (row_var[:, None] * eigenvalues[None, :])
    df, _, _ = delta_f(rotated, precision, prior_var, 0)
    return jnp.sum(df)


def group_delta_f(row_delta_f, groups, num_groups: int):
    """Delta F of removing whole groups of rows (conv channels are rows already; attention
    heads are ``head_dim`` consecutive rows of each projection): rows are independent under
    the mean-field and matrix-normal posteriors, so a group's Delta F is the sum of its rows'.

    Args:
      row_delta_f: ``(rows,)``; groups: ``(rows,)`` integer group of each row.
    """
    return jax.ops.segment_sum(row_delta_f, groups, num_segments=num_groups)
