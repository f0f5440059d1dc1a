"""The reduce step, sparsity accounting and the non-centred reduced posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bmr_jax.bayes.layers import LayerSpec, LayerView
from bmr_jax.bmr import (
    Evidence,
    SpikeAndSlab,
    delta_f,
    gamma_from_masks,
    make_reduce,
    noncentred_reduced_posterior,
    propagate_dead_units,
    sparsity,
)

pytestmark = pytest.mark.numerics  # scripts/device_check.sh runs these on a device


def _dense_view():
    """784 -> 3 -> 2 (dense), as rows x (fan_in + 1) matrices."""
    a = LayerSpec("a", ("a",), (4, 3), (3,), 3, 4, False)
    b = LayerSpec("b", ("b",), (3, 2), (2,), 2, 3, True, prunable=False)
    return LayerView((a, b))


def test_reduce_is_delta_f_then_the_rule_in_one_compiled_call():
    view = _dense_view()
    rng = np.random.default_rng(0)
    posterior = {
        s.name: (jnp.asarray(rng.normal(size=s.shape), jnp.float32),
                 jnp.asarray(rng.uniform(0.5, 50, s.shape), jnp.float32))
        for s in view.layers
    }  # fmt: skip
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    # make_reduce is pure; callers jit it (write_back static), the whole step one program
    reduce = jax.jit(make_reduce(view, Evidence()), static_argnums=3)
    result = reduce(posterior, masks, 2)
    for name, (mean, precision) in posterior.items():
        # the spike's Delta F by hand (Savage-Dickey, s = 1): 1/2 (ln pi - pi mu^2), float64
        mu, pi = np.asarray(mean, np.float64), np.asarray(precision, np.float64)
        expected = 0.5 * (np.log(pi) - pi * mu**2)
        # some entries sit near the decision boundary 0, so rtol alone is not enough: the
        # float32 kernel rounds ln pi (<= 4) and pi mu^2 (<= ~400) to a few eps32 each, so
        # atol = 4 eps32 (|ln pi| + pi mu^2) per entry
        atol = 4 * np.finfo(np.float32).eps * (np.abs(np.log(pi)) + pi * mu**2)
        error = np.abs(np.asarray(result.delta_f[name]) - expected)
        assert np.all(error <= 1e-6 * np.abs(expected) + atol), name
    np.testing.assert_array_equal(result.masks["a"], result.delta_f["a"] <= 0)
    assert bool(jnp.all(result.masks["b"]))  # the classifier is not prunable
    for block in range(3, 8):  # block is traced: no recompilation
        result = reduce(posterior, result.masks, block)
    assert reduce._cache_size() == 1


def test_write_back_returns_the_prior_for_pruned_and_keeps_the_rest():
    view = _dense_view()
    mean = jnp.full((3, 5), 0.01)
    mean = mean.at[0].set(3.0)  # row 0 clearly needed
    precision = jnp.full((3, 5), 100.0)
    posterior = {"a": (mean, precision), "b": (jnp.ones((2, 4)), jnp.full((2, 4), 4.0))}
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    result = make_reduce(view, SpikeAndSlab())(posterior, masks, 2, True)
    kept = result.masks["a"]
    assert kept[0].all() and not kept[1:].any()
    loc, reduced_precision = result.reduced["a"]  # (mean, precision) in the guide's coordinates
    np.testing.assert_allclose(loc[0], 3.0, rtol=1e-6)  # kept: unchanged
    np.testing.assert_allclose(reduced_precision[0], 100.0, rtol=1e-6)
    # pruned: back to N(0, 1). loc = mu (pi / d) sqrt(g s) with g = 0 is exactly 0 (a product
    # with sqrt(0)); atol 1e-12 only states "zero" for assert_allclose
    np.testing.assert_allclose(loc[1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(reduced_precision[1:], 1.0, rtol=1e-6)


def test_noncentred_reduced_posterior_is_the_rescaled_reduced_posterior():
    mu, pi, s, g = 0.7, 9.0, 1.0, 0.25
    _, mean, precision = delta_f(mu, pi, s, g)
    gamma = np.sqrt(g / s)
    loc, prec = noncentred_reduced_posterior(mu, pi, s, g)
    np.testing.assert_allclose(loc, float(mean) / gamma, rtol=1e-6)
    np.testing.assert_allclose(prec, float(precision) * gamma**2, rtol=1e-6)


def test_dead_units_propagate_through_dense_layers():
    view = _dense_view()
    masks = {
        "a": jnp.array([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], bool),
        "b": jnp.ones((2, 4), bool),
    }
    effective = propagate_dead_units(masks, view)
    # unit 1 of layer a is dead (whole row incl. bias); unit 2 keeps a weight: alive
    np.testing.assert_array_equal(effective["b"], [[1, 0, 1, 1], [1, 0, 1, 1]])
    counts = sparsity(masks, view, sequential=True)
    assert counts["pruned_fraction"] == pytest.approx(9 / 23)
    assert counts["dead_fraction"] == pytest.approx(11 / 23)
    # 23 entries, 14 kept by the masks (5 + 1 in a, 8 in b), 12 alive; 18 weights (biases
    # left out), 11 kept: row 0 of a's 4 and row 2's first, and b's 2 x 3
    assert counts["compression_alive"] == pytest.approx(23 / 12)
    assert counts["compression_by_mask"] == pytest.approx(23 / 14)
    assert counts["weight_compression_by_mask"] == pytest.approx(18 / 11)
    assert counts["layers"]["a"] == pytest.approx(9 / 15) and counts["layers"]["b"] == 0
    assert sparsity(masks, view, sequential=False)["dead_fraction"] == pytest.approx(9 / 23)


def test_dead_channels_of_a_conv_kill_their_flattened_features():
    conv = LayerSpec("conv", ("conv",), (1, 1, 1, 2), (2,), 2, 1, False)
    # NHWC flatten of 2 channels x 3 positions: feature k reads channel k % 2
    dense = LayerSpec("dense", ("dense",), (6, 1), (1,), 1, 6, True)
    masks = {"conv": jnp.array([[True, True], [False, False]]), "dense": jnp.ones((1, 7), bool)}
    effective = propagate_dead_units(masks, LayerView((conv, dense)))
    np.testing.assert_array_equal(effective["dense"], [[1, 0, 1, 0, 1, 0, 1]])


def test_gamma_from_masks():
    gamma = gamma_from_masks({"a": jnp.array([True, False])})
    np.testing.assert_allclose(gamma["a"], [1.0, 1e-12])
    assert gamma["a"].dtype == jnp.result_type(float)
    jax.block_until_ready(gamma)


def _matrix_normal_params_at(guide, init):
    """Matrix-normal guide parameters (constrained) of every layer at their initial values:
    loc = the initial Z, row_scale = the guide's init_scale, col_scale_tril = I (what the
    guide starts from; all the unit reduce reads)."""
    params = {}
    for layer in guide.layers():
        rows, cols = guide.sites[f"{layer}/z"].shape
        params[f"{layer}/z/loc"] = jnp.asarray(init[f"{layer}/z"], jnp.float32)
        params[f"{layer}/z/row_scale"] = jnp.full(rows, guide.init_scale, jnp.float32)
        params[f"{layer}/z/col_scale_tril"] = jnp.eye(cols, dtype=jnp.float32)
    return params


def test_structured_reduce_prunes_whole_units_from_a_matrix_normal_guide():
    """dense.0 of a LeNet-5 with a matrix-normal guide: units 0-41 get posteriors tight around
    0, units 42-83 clearly non-zero means; the unit rule removes exactly units 0-41, whole rows
    (weights and bias), and Delta F per unit equals the Savage-Dickey ratio computed from the
    raw guide parameters (an independent reference: not the reader the code uses)."""
    from flax import nnx

    from bmr_jax import nets
    from bmr_jax.bayes import guides, priors
    from bmr_jax.bayes.model import BayesianNetwork
    from bmr_jax.bmr import make_unit_reduce

    net = nets.create_net("lenet5", 10, (32, 32, 1), "small", rngs=nnx.Rngs(0))
    bnet = BayesianNetwork.from_module(net, (32, 32, 1), priors.FlatPrior())
    init = bnet.init_latents()
    x0, y0 = jnp.zeros((2, 32, 32, 1)), jnp.zeros(2, jnp.int32)
    guide = guides.MatrixNormalGuide(
        guides.latent_sites(bnet.model, x0, y0, init_values=init), init
    )
    rows, cols = 84, 121
    loc = np.concatenate([np.zeros((42, cols)), np.full((42, cols), 2.0)]).astype(np.float32)
    params = {**_matrix_normal_params_at(guide, init), "dense.0/z/loc": jnp.asarray(loc),
              "dense.0/z/row_scale": jnp.full(rows, 1e-2, jnp.float32)}  # fmt: skip
    view = bnet.view
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.bayesian_layers}
    reduce = jax.jit(make_unit_reduce(view, SpikeAndSlab()))
    result = reduce(guide.posterior(params), masks, 2)
    kept_units = np.asarray(result.masks["dense.0"]).all(axis=1)
    np.testing.assert_array_equal(kept_units, np.arange(rows) >= 42)
    assert not np.asarray(result.masks["dense.0"])[:42].any()  # whole rows, bias included
    assert np.asarray(result.masks["head"]).all()
    # Independent reference: removing unit i (reduced prior a spike on the whole row) has the
    # Savage-Dickey evidence ratio Delta F_i = ln q(Z_i = 0) - ln p(Z_i = 0), with the guide's
    # row marginal q(Z_i) = N(loc_i, row_scale_i^2 L L') and p = N(0, I), read from the raw
    # guide parameters (not through the guide's posterior reader) and evaluated in float64.
    raw_loc = np.asarray(params["dense.0/z/loc"], np.float64)
    raw_row_scale = np.asarray(params["dense.0/z/row_scale"], np.float64)
    tril = np.asarray(params["dense.0/z/col_scale_tril"], np.float64)
    expected = [
        stats.multivariate_normal(raw_loc[i], raw_row_scale[i] ** 2 * tril @ tril.T).logpdf(
            np.zeros(cols)
        )
        - stats.multivariate_normal(np.zeros(cols), np.eye(cols)).logpdf(np.zeros(cols))
        for i in range(rows)
    ]
    # values are +557 (units 0-41) and -2.4e6 (units 42-83), never near 0; float32 kernels
    # carry a relative error of ~cols * eps32 = 1.5e-5 on the larger sums
    np.testing.assert_allclose(result.delta_f["dense.0"], expected, rtol=5e-5)


# ------------------------------------------------- the matrix-normal reader against the guide

MN_ROWS, MN_COLS = 3, 4


def _matrix_normal_guide():
    """A MatrixNormalGuide over one (3, 4) matrix ``a/z`` (3 units, fan-in 3 + bias)."""
    from bmr_jax.bayes.guides import LatentSite, MatrixNormalGuide

    site = LatentSite("a/z", (MN_ROWS, MN_COLS), False)
    return MatrixNormalGuide({"a/z": site}, {"a/z": jnp.zeros((MN_ROWS, MN_COLS))})


def _matrix_normal_params(loc, row_scale, tril):
    return {"a/z/loc": jnp.asarray(loc, jnp.float32),
            "a/z/row_scale": jnp.asarray(row_scale, jnp.float32),
            "a/z/col_scale_tril": jnp.asarray(tril, jnp.float32)}  # fmt: skip


MN_LOC = np.array([[0.5, -1.0, 2.0, 0.3], [0.0, 1.0, -0.5, 1.2], [-2.0, 0.4, 0.1, -0.7]])
MN_ROW_SCALE = np.array([0.3, 1.7, 0.6])  # sqrt(u): u = (0.09, 2.89, 0.36), not sqrt(u) itself
MN_TRIL = np.array([[1.0, 0.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0], [-0.3, 0.2, 0.5, 0.0],
                    [0.4, -0.5, 0.3, 1.3]])  # chol(V), V = L L' (not L' L)  # fmt: skip


def test_matrix_normal_reader_matches_the_monte_carlo_moments_of_the_guide():
    """The guide's reader (``MatrixNormalGuide.posterior``, what structured BMR reads) says
    row i of Z is N(M_i, u_i V). Draw Z from the guide
    itself (``sample_latents``, one draw per key, as training does) and compare the empirical
    mean and per-row covariance with (M_i, u_i V).

    Tolerance from the number of draws n = 100,000: the sample covariance of a Gaussian has
    standard error sqrt((S_jj S_kk + S_jk^2) / n) per entry and the sample mean
    sqrt(S_jj / n); every entry must lie within 5 standard errors (with 30 + 12 entries
    compared, a false alarm has probability < 1e-4; the draws are seeded, so it is fixed).
    A reader using row_scale instead of row_scale^2 (u off by 0.3x to 1.7x) or L'L instead
    of LL' misses by tens of standard errors."""
    from bmr_jax.bayes.guides import sample_latents

    guide = _matrix_normal_guide()
    params = _matrix_normal_params(MN_LOC, MN_ROW_SCALE, MN_TRIL)
    mean, row_var, col_cov = (np.asarray(a, np.float64) for a in guide.posterior(params)["a"])
    n = 100_000
    keys = jax.random.split(jax.random.key(0), n)
    draws = jax.jit(jax.vmap(lambda k: sample_latents(guide, params, k)["a/z"]))(keys)
    draws = np.asarray(draws, np.float64)
    assert draws.shape == (n, MN_ROWS, MN_COLS)
    for i in range(MN_ROWS):
        sigma = row_var[i] * col_cov  # what the reader claims for row i
        mean_error = np.sqrt(np.diag(sigma) / n)
        np.testing.assert_array_less(np.abs(draws[:, i].mean(0) - mean[i]), 5 * mean_error)
        empirical = np.cov(draws[:, i].T)
        cov_error = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n)
        np.testing.assert_array_less(np.abs(empirical - sigma), 5 * cov_error)
    # and the reader's summaries are the documented functions of the raw parameters
    np.testing.assert_allclose(mean, MN_LOC, rtol=1e-6)  # float32 round trip of the inputs
    np.testing.assert_allclose(row_var, MN_ROW_SCALE**2, rtol=1e-6)
    # V = L L' has entries of size ~1 and no zero entries here; float32 products: 4 eps32
    np.testing.assert_allclose(col_cov, MN_TRIL @ MN_TRIL.T, rtol=0, atol=4 * 2.4e-7 * 4)


def test_unit_with_rows_near_zero_is_the_one_whose_removal_delta_f_favours():
    """Hand-made matrix-normal posterior: unit 1 has a mean of ~0.01 against posterior
    standard deviations of ~0.05, units 0 and 2 means of size ~1. The closed-form unit Delta F
    of removing a unit (spike on its whole row) is positive only for unit 1 and equals, for
    every unit, the Savage-Dickey ratio ln N(0; M_i, u_i V) - ln N(0; 0, I) computed with
    scipy in float64 from the raw parameters (u_i = row_scale_i^2, V = L L')."""
    from bmr_jax.bmr import delta_f_matrix_normal_rows

    guide = _matrix_normal_guide()
    loc = np.array([[1.0, -0.8, 1.5, 0.6], [0.01, -0.01, 0.02, 0.0], [-1.2, 0.9, 0.7, -1.0]])
    row_scale = np.array([0.05, 0.04, 0.06])
    params = _matrix_normal_params(loc, row_scale, MN_TRIL)
    mean, row_var, col_cov = guide.posterior(params)["a"]
    df = np.asarray(delta_f_matrix_normal_rows(mean, row_var, col_cov, 1.0,
                                               jnp.zeros(MN_ROWS)))  # fmt: skip
    assert list(df > 0) == [False, True, False]
    loc32 = np.asarray(params["a/z/loc"], np.float64)  # the float32 values the code reads
    rs32 = np.asarray(params["a/z/row_scale"], np.float64)
    V = np.asarray(params["a/z/col_scale_tril"], np.float64)
    V = V @ V.T
    expected = np.array([
        stats.multivariate_normal(loc32[i], rs32[i] ** 2 * V).logpdf(np.zeros(MN_COLS))
        - stats.multivariate_normal(np.zeros(MN_COLS), np.eye(MN_COLS)).logpdf(np.zeros(MN_COLS))
        for i in range(MN_ROWS)
    ])  # fmt: skip
    # |Delta F| ranges from ~10 (unit 1) to ~1e3; float32 eigendecomposition and sums of
    # terms of size up to ~1e3 (mu^2 / (u lambda)) give a relative error of ~1e-5 of the
    # largest term, so rtol 1e-4 on values that are all well away from 0 (min |df| ~ 10)
    np.testing.assert_allclose(df, expected, rtol=1e-4)
