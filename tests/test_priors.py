"""Prior sampling against independent references (Kolmogorov-Smirnov tests at level 0.01,
fixed seeds, so each test is deterministic)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from scipy import stats

from bmr_jax.bayes import priors
from bmr_jax.bayes.layers import LayerSpec, LayerView

LEVEL = 0.01
DRAWS = 20_000


def _view(rows=3, cols=4):
    hidden = LayerSpec("hidden", ("hidden",), (cols - 1, rows), (rows,), rows, cols - 1, False)
    last = LayerSpec("head", ("head",), (rows, 2), (2,), 2, rows, True)
    return LayerView((hidden, last))


def _draw(fn, n=DRAWS, seed=0):
    """``n`` independent runs of the NumPyro function ``fn`` (vmapped over seeds)."""
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.vmap(lambda k: handlers.seed(fn, rng_seed=k)())(keys)


def test_half_cauchy_from_two_gammas():
    draws = np.asarray(_draw(lambda: priors.half_cauchy("x")))
    assert stats.kstest(draws, stats.halfcauchy.cdf).pvalue > LEVEL


def test_flat_prior_precision_and_scales():
    view = _view()
    prior = priors.FlatPrior()

    def run():
        scales = prior.scales(view)
        return scales["hidden"], scales["head"]

    with handlers.trace() as tr, handlers.seed(rng_seed=0):
        run()
    assert set(tr) == {"hidden/precision", "head/precision"}
    hidden, head = (np.asarray(a) for a in _draw(run))
    # scale = c / 10 (hidden), c (last) with c^-2 ~ Gamma(2, rate 2)
    precision = 1 / np.square(10 * hidden)
    assert stats.kstest(precision, stats.gamma(a=2, scale=1 / 2).cdf).pvalue > LEVEL
    assert stats.kstest(1 / np.square(head), stats.gamma(a=2, scale=1 / 2).cdf).pvalue > LEVEL


def test_regularised_horseshoe_marginal_against_a_scipy_construction():
    view = _view(rows=5)
    prior = priors.HorseshoePrior()
    ours = np.asarray(_draw(lambda: prior.scales(view)["hidden"][0, 0]))
    # independent reference: scipy's own half-Cauchy and Gamma samplers
    rng = np.random.default_rng(1)
    c2 = 1 / stats.gamma(a=2, scale=1 / 6).rvs(DRAWS, random_state=rng)
    t = 1e-2 * stats.halfcauchy.rvs(size=DRAWS, random_state=rng)
    t = t * stats.halfcauchy.rvs(size=DRAWS, random_state=rng)
    reference = np.sqrt(c2 * t**2 / (c2 + t**2))
    assert stats.ks_2samp(ours, reference).pvalue > LEVEL
    # the slab caps the scale: gamma < c always, and gamma ~ t when t << c
    assert np.all(ours > 0)


def test_horseshoe_last_layer_is_one_half_cauchy_scale():
    view = _view()
    prior = priors.HorseshoePrior()
    draws = np.asarray(_draw(lambda: prior.scales(view)["head"]))
    assert draws.shape == (DRAWS,)  # one scalar for the whole matrix
    assert stats.kstest(draws, stats.halfcauchy.cdf).pvalue > LEVEL


def test_horseshoe_weight_wise_scales_have_the_matrix_shape():
    view = _view(rows=3, cols=4)
    with handlers.seed(rng_seed=0):
        scales = priors.HorseshoePrior(weight_wise=True).scales(view)
    assert scales["hidden"].shape == (3, 4)


def test_initial_scales():
    view = _view()
    flat = priors.layer_scales_at(priors.FlatPrior(), view, priors.FlatPrior().init_values(view))
    np.testing.assert_allclose([flat["hidden"], flat["head"]], [0.1, 1.0], rtol=1e-6)
    hs = priors.HorseshoePrior()
    scales = priors.layer_scales_at(hs, view, hs.init_values(view))
    # t = 0.1 and c^2 = 3: gamma = sqrt(3 * 0.01 / 3.01)
    np.testing.assert_allclose(scales["hidden"], np.sqrt(0.03 / 3.01), rtol=1e-5)
    assert float(scales["head"]) == 1.0
    assert jnp.shape(priors.FlatPrior().prior_variance(view.layers[0])) == ()


def test_registry():
    assert priors.PRIORS.names() == ["flat", "horseshoe", "log_uniform"]
    assert priors.create_prior("horseshoe", tau0=0.1).tau0 == 0.1
