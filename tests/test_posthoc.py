"""Post-hoc BMR from a Laplace posterior (issue 39), against independent references: the exact
evidence of a linear-Gaussian model (where the Laplace posterior is exact), a GGN built from a
finite-difference Jacobian, a grid search of the Laplace evidence, and a real Adam-trained
network pruned without retraining."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from bmr_jax import posthoc
from bmr_jax.posthoc.evidence import log_evidence_terms

SIGMA, DELTA = 0.5, 2.0


def _log_normal_evidence(y, design, delta, sigma):
    """ln N(y; 0, sigma^2 I + X X^T / delta): the linear model's exact log evidence."""
    cov = sigma**2 * np.eye(len(y)) + design @ design.T / delta
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (y @ np.linalg.solve(cov, y) + logdet + len(y) * np.log(2 * np.pi))


@pytest.fixture(scope="module")
def linear_model():
    """y = X w + noise, 40 data, 5 weights, an orthogonal design (X^T X diagonal, so the
    diagonal Laplace posterior is the exact one) and the MAP weights under N(0, 1 / 2)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(40, 5)))
    design = q * np.array([3.0, 1.0, 2.0, 0.5, 4.0])
    w = np.array([1.5, 0.0, -0.8, 0.05, 0.0])
    y = design @ w + SIGMA * rng.normal(size=40)
    gram = np.diag(design.T @ design)
    theta = (design.T @ y / SIGMA**2) / (gram / SIGMA**2 + DELTA)
    return design, y, theta


def _apply(params, x):
    return x @ params["w"][:, None]


def test_laplace_delta_f_is_the_exact_log_evidence_change(linear_model):
    """With an orthogonal design the GGN is X^T X / sigma^2 exactly and the posterior is
    Gaussian, so each weight's Delta F equals ln p(y | without it) - ln p(y | all), computed
    here from the two Gaussian marginal likelihoods; and the Laplace log evidence equals the
    exact one."""
    design, y, theta = linear_model
    with jax.enable_x64(True):
        params = {"w": jnp.asarray(theta)}
        ggn = posthoc.ggn_diagonal(_apply, params, design, likelihood="gaussian", noise_sd=SIGMA)
        np.testing.assert_allclose(ggn["w"], np.diag(design.T @ design) / SIGMA**2, rtol=1e-10)
        posterior = posthoc.laplace_posterior(params, ggn, DELTA)
        delta_f = np.asarray(posthoc.laplace_delta_f(posterior)["w"])
        full = _log_normal_evidence(y, design, DELTA, SIGMA)
        exact = [_log_normal_evidence(y, np.delete(design, i, axis=1), DELTA, SIGMA) - full
                 for i in range(5)]  # fmt: skip
        np.testing.assert_allclose(delta_f, exact, atol=1e-8)
        assert delta_f[0] < -10  # the large, well-determined weight stays by far
        log_lik = posthoc.log_likelihood(_apply, params, design, y[:, None], likelihood="gaussian",
                                         noise_sd=SIGMA)  # fmt: skip
        laplace = posthoc.log_marginal_likelihood(log_lik, params, ggn, DELTA)
        assert laplace == pytest.approx(full, abs=1e-8)


def _tiny_mlp(params, x):
    return jnp.tanh(x @ params["a"] + params["b"]) @ params["c"]


def test_the_ggn_diagonal_matches_a_finite_difference_jacobian():
    """A 3-4-3 tanh network, 6 data, softmax outputs: diag(sum_n J_n^T (diag p - p p^T) J_n)
    with J_n from central differences of the logits (step 1e-6, float64)."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        params = {"a": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=4)),
                  "c": jnp.asarray(rng.normal(size=(4, 3)))}  # fmt: skip
        x = rng.normal(size=(6, 3))
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        flat = np.asarray(flat)
        reference = np.zeros(flat.size)
        for n in range(6):
            def logits(v, n=n):
                return np.asarray(_tiny_mlp(unravel(jnp.asarray(v)), jnp.asarray(x[n : n + 1])))[0]

            jac = np.stack([(logits(flat + 1e-6 * e) - logits(flat - 1e-6 * e)) / 2e-6
                            for e in np.eye(flat.size)], axis=1)  # fmt: skip
            p = np.exp(logits(flat) - logits(flat).max())
            p /= p.sum()
            reference += np.diag(jac.T @ (np.diag(p) - np.outer(p, p)) @ jac)
        ggn = posthoc.ggn_diagonal(_tiny_mlp, params, x, batch_size=4)  # two chunks
        np.testing.assert_allclose(np.asarray(jax.flatten_util.ravel_pytree(ggn)[0]), reference,
                                   rtol=1e-6, atol=1e-9)  # fmt: skip


def test_the_calibrated_prior_precision_is_the_grid_searchs_best(linear_model):
    """Per leaf and global, the calibrated delta maximises the Laplace evidence: a grid of
    2,001 values over 1e-4..1e4 finds nothing better, and its best lies within a grid step."""
    design, _, theta = linear_model
    params = {"w": np.asarray(theta), "v": np.array([0.3, -2.0, 0.01])}
    ggn = {"w": np.diag(design.T @ design) / SIGMA**2, "v": np.array([5.0, 0.5, 50.0])}
    grid = np.logspace(-4, 4, 2001)
    per_leaf = posthoc.calibrate_prior_precision(params, ggn, scope="leaf")
    for name in ("w", "v"):
        values = [log_evidence_terms(params[name], ggn[name], d) for d in grid]
        best = grid[int(np.argmax(values))]
        assert abs(np.log(per_leaf[name]) - np.log(best)) <= np.log(grid[1] / grid[0])
        assert log_evidence_terms(params[name], ggn[name], per_leaf[name]) >= max(values) - 1e-9
    both = np.concatenate([params["w"], params["v"]]), np.concatenate([ggn["w"], ggn["v"]])
    values = [log_evidence_terms(*both, d) for d in grid]
    glob = posthoc.calibrate_prior_precision(params, ggn)
    assert log_evidence_terms(*both, glob) >= max(values) - 1e-9


def test_rules_and_their_errors():
    """The target rule prunes exactly its fraction of the kernels, largest Delta F first, and
    leaves the biases; the evidence rule prunes where Delta F exceeds the threshold."""
    mean = {"kernel": jnp.array([[0.01, 2.0], [-3.0, 0.002]]), "bias": jnp.array([0.0, 0.0])}
    posterior = posthoc.laplace_posterior(mean, jax.tree.map(lambda m: jnp.full(m.shape, 100.0),
                                                             mean), 1.0)  # fmt: skip
    masks = posthoc.prune_laplace(posterior, rule="target", fraction=0.5)
    assert np.asarray(masks["kernel"]).tolist() == [[False, True], [True, False]]
    assert np.asarray(masks["bias"]).all()
    df = np.asarray(posthoc.laplace_delta_f(posterior)["kernel"])  # 1/2 [ln 101 - 101 m^2]
    np.testing.assert_allclose(df, 0.5 * (np.log(101.0) - 101.0 * np.asarray(mean["kernel"])**2),
                               rtol=1e-5)  # fmt: skip
    evidence = posthoc.prune_laplace(posterior, rule="evidence", threshold=2.0)
    assert np.asarray(evidence["kernel"]).tolist() == (df <= 2.0).tolist()
    with pytest.raises(ValueError, match="fraction"):
        posthoc.prune_laplace(posterior, rule="spike_and_slab", fraction=0.5)
    with pytest.raises(ValueError, match="rule must be one of"):
        posthoc.prune_laplace(posterior, rule="magnitude")


def test_the_sampled_ggn_is_unbiased_for_the_exact_one():
    """One label a datum drawn from the network's predictive: over 100 keys the mean of the
    estimate is the exact diagonal within 5 standard errors in every entry, and one estimate
    is not it (the labels really are drawn)."""
    rng = np.random.default_rng(2)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=4), jnp.float32),
              "c": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}  # fmt: skip
    x = rng.normal(size=(6, 3)).astype(np.float32)
    exact = np.asarray(jax.flatten_util.ravel_pytree(posthoc.ggn_diagonal(_tiny_mlp, params, x))[0])
    draws = np.stack([
        np.asarray(jax.flatten_util.ravel_pytree(posthoc.ggn_diagonal(
            _tiny_mlp, params, x, key=jax.random.key(k)))[0]) for k in range(100)])  # fmt: skip
    error = np.abs(draws.mean(0) - exact)
    assert np.all(error <= 5 * draws.std(0) / np.sqrt(100) + 1e-6)
    assert not np.allclose(draws[0], exact, rtol=1e-3)


def test_refit_keeps_the_pruned_entries_at_zero_and_lowers_the_loss():
    """A softmax regression on separable data with half its weights masked: after 50 steps
    the masked entries are exactly 0 and the training loss has fallen."""
    import optax

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0)  # 4 classes

    def apply(p, xb):
        return xb @ p["w"] + p["b"]

    params = {"w": jnp.asarray(rng.normal(size=(6, 4)) * 0.1, jnp.float32),
              "b": jnp.zeros(4, jnp.float32)}  # fmt: skip
    masks = {"w": jnp.asarray(rng.uniform(size=(6, 4)) > 0.5), "b": jnp.ones(4, bool)}

    def loss(p):
        return float(optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean())

    before = loss(jax.tree.map(lambda v, m: jnp.where(m, v, 0.0), params, masks))
    after = posthoc.refit(apply, params, masks, x, y, steps=50, lr=0.05, batch_size=50)
    assert np.all(np.asarray(after["w"])[~np.asarray(masks["w"])] == 0.0)
    assert loss(after) < before - 0.1
