"""BMR-RHS write-back: the guide's posterior after the prior multipliers change old -> new,
against the Gaussian product rule carried out by hand in flat coordinates.

Model: ``W = gamma Z`` (the layer scale is common to both sides and drops out). The guide over
``Z`` is ``N(mu, 1/pi)`` under the prior ``N(0, s)``, i.e. in flat coordinates
``W ~ N(gamma_old mu, gamma_old^2 / pi)`` under ``N(0, s gamma_old^2)``. The reduced prior is
``N(0, s gamma_new^2)``; the reduced posterior is posterior / old prior * new prior (a product
of Gaussians, done below in numpy float64), and the guide must then hold it in the new
non-centred coordinates ``Z' = W / gamma_new``. Its Delta F is checked against a 1-D
quadrature of ``ln int q(w) p_new(w) / p_old(w) dw`` in the same flat coordinates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from bmr_jax.bayes.guides import LatentSite, MeanFieldGuide
from bmr_jax.bmr import delta_f

# The function under test. It was ``bmr_jax.methods._rescaled_posterior`` (returning guide
# values ``{"<layer>/z/loc", "<layer>/z/scale"}``); the training-loop refactor moved it to
# ``bmr_jax.bmr.rhs.rescaled_posterior`` returning ``{layer: (mean, precision)}``, which
# ``MeanFieldGuide.posterior_params`` turns into the guide values written back. Update here
# if it moves again.
from bmr_jax.bmr.rhs import rescaled_posterior

EPS32 = float(np.finfo(np.float32).eps)
G_OLD = 0.3  # old multiplier, deliberately not 1
MU = np.array([1.5, -0.4, 0.0, 0.02])
PI = np.array([30.0, 4.0, 10.0, 2.5])  # all above 1 / s for both prior variances below


def _write_back(mean, precision, old_gamma, new_gamma, s):
    """The guide values {loc, scale} the RHS step writes back for one layer ``a``."""
    shape = np.shape(mean)
    guide = MeanFieldGuide({"a/z": LatentSite("a/z", shape, False)},
                           {"a/z": jnp.zeros(shape)})  # fmt: skip
    f32 = lambda v: jnp.asarray(np.broadcast_to(v, shape), jnp.float32)  # noqa: E731
    reduced = rescaled_posterior({"a": (f32(mean), f32(precision))}, {"a": f32(old_gamma)},
                                 {"a": f32(new_gamma)}, {"a": s})  # fmt: skip
    values = guide.posterior_params(reduced)
    return np.asarray(values["a/z/loc"], np.float64), np.asarray(values["a/z/scale"], np.float64)


def _product_rule(mu, pi, s, g_old, g_new):
    """Reduced posterior by hand, in flat coordinates, then expressed in Z' = W / g_new."""
    m_w, v_w = g_old * mu, g_old**2 / pi  # the guide as a posterior over W
    old_prior, new_prior = s * g_old**2, s * g_new**2
    precision_w = 1 / v_w + 1 / new_prior - 1 / old_prior  # posterior / old prior * new prior
    mean_w = (m_w / v_w) / precision_w
    return mean_w / g_new, 1 / (g_new * np.sqrt(precision_w)), mean_w, precision_w


@pytest.mark.parametrize("s", [1.0, 0.7])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 2.0])
def test_write_back_is_the_product_rule_in_flat_coordinates(ratio, s):
    g_new = G_OLD * ratio
    loc, scale = _write_back(MU, PI, G_OLD, g_new, s)
    ref_loc, ref_scale, _, _ = _product_rule(MU, PI, s, G_OLD, g_new)
    # float32: a handful of roundings (d = 1 + g (pi - 1/s), pi / d, sqrt, products, rsqrt),
    # each eps32 = 1.2e-7, and no cancellation in d for these cases (d >= 1 - g/s + g pi,
    # and at ratio 2, d = 4 s pi - 3 loses at most a factor 7/4): rtol 1e-5. mu = 0 gives
    # loc = 0 exactly on both sides (a product with mu); atol 10 eps32 for it
    np.testing.assert_allclose(loc, ref_loc, rtol=1e-5, atol=10 * EPS32)
    np.testing.assert_allclose(scale, ref_scale, rtol=1e-5)
    if ratio == 1.0:  # nothing changes
        np.testing.assert_allclose(loc, MU, rtol=1e-6, atol=10 * EPS32)
        np.testing.assert_allclose(scale, PI**-0.5, rtol=1e-6)


@pytest.mark.parametrize("s", [1.0, 0.7])
def test_a_multiplier_ratio_under_1e6_is_pruned_back_to_the_prior(s):
    """The code promises: ratio new / old < 1e-6 is a pruned weight, returned to N(0, s) in
    the new coordinates. The exact product rule at ratio r = 1e-7 differs from that by
    loc ~ mu pi s r (the prior dominates: precision_w ~ 1 / (s g_new^2)) and a relative
    scale change ~ r^2 s (pi - 1/s) / 2 ~ 1e-13, so it agrees to 2 |mu| pi s r."""
    ratio = 1e-7
    loc, scale = _write_back(MU, PI, G_OLD, G_OLD * ratio, s)
    np.testing.assert_array_equal(loc, 0.0)  # sqrt(g s) with g = 0: exactly 0
    np.testing.assert_allclose(scale, np.sqrt(s), rtol=2 * EPS32)
    ref_loc, ref_scale, _, _ = _product_rule(MU, PI, s, G_OLD, G_OLD * ratio)
    assert np.all(np.abs(ref_loc - loc) <= 2 * np.abs(MU) * PI * s * ratio)
    np.testing.assert_allclose(scale, ref_scale, rtol=1e-6)
    # kept -> pruned (old 0.3, new the spike multiplier 1e-12) is the same promise
    loc, scale = _write_back(MU, PI, G_OLD, 1e-12, s)
    np.testing.assert_array_equal(loc, 0.0)
    np.testing.assert_allclose(scale, np.sqrt(s), rtol=2 * EPS32)


def test_pruned_stays_pruned_and_a_wider_than_prior_posterior_counts_as_the_prior():
    """Entries: 0 pruned -> pruned (1e-12 -> 1e-12: ratio 1, unchanged); 1 and 2 shrunk by
    one half; entry 2's posterior (pi = 0.5 < 1/s) is wider than its prior, which the code
    treats as no information beyond the prior (pi -> 1/s) -- the reference applies the
    product rule to N(mu, s) for it."""
    s = 1.0
    mean = np.array([0.7, 1.5, 0.8])
    precision = np.array([3.0, 30.0, 0.5])
    old = np.array([1e-12, G_OLD, G_OLD])
    new = np.array([1e-12, G_OLD / 2, G_OLD / 2])
    loc, scale = _write_back(mean, precision, old, new, s)
    np.testing.assert_allclose(loc[0], mean[0], rtol=1e-6)
    np.testing.assert_allclose(scale[0], precision[0] ** -0.5, rtol=1e-6)
    effective = np.maximum(precision, 1 / s)
    ref_loc, ref_scale, _, _ = _product_rule(mean[1:], effective[1:], s, old[1:], new[1:])
    np.testing.assert_allclose(loc[1:], ref_loc, rtol=1e-5)  # no zeros among these
    np.testing.assert_allclose(scale[1:], ref_scale, rtol=1e-5)


def _quadrature_log_evidence_ratio(mu, pi, s, g_old, g_new):
    """ln int N(w; g_old mu, g_old^2/pi) N(w; 0, s g_new^2) / N(w; 0, s g_old^2) dw by
    adaptive quadrature over +-40 sd of the integrand (a Gaussian bump; its centre and width
    from the product rule only place the window)."""
    _, _, centre, precision_w = _product_rule(mu, pi, s, g_old, g_new)
    width = 1 / np.sqrt(precision_w)

    def log_f(w):
        return (stats.norm.logpdf(w, g_old * mu, g_old / np.sqrt(pi))
                + stats.norm.logpdf(w, 0, np.sqrt(s) * g_new)
                - stats.norm.logpdf(w, 0, np.sqrt(s) * g_old))  # fmt: skip

    top = log_f(centre)
    value, _ = integrate.quad(lambda w: np.exp(log_f(w) - top), centre - 40 * width,
                              centre + 40 * width, points=[centre], limit=200, epsabs=0,
                              epsrel=1e-12)  # fmt: skip
    return top + np.log(value)


@pytest.mark.parametrize("ratio", [1.0, 0.5, 2.0, 1e-7])
@pytest.mark.parametrize("mu, pi", [(1.5, 30.0), (0.02, 4.0)])
def test_delta_f_of_the_change_matches_quadrature_in_flat_coordinates(mu, pi, ratio):
    """Delta F of changing the multiplier 0.3 -> 0.3 ratio is, in Z coordinates, the
    reduction N(0, s) -> N(0, s ratio^2); the evidence ratio does not depend on coordinates,
    so it must equal the quadrature in W = 0.3 Z coordinates."""
    s = 1.0
    reference = _quadrature_log_evidence_ratio(mu, pi, s, G_OLD, G_OLD * ratio)
    with jax.enable_x64(True):
        df, _, _ = delta_f(jnp.float64(mu), jnp.float64(pi), jnp.float64(s),
                           jnp.float64(s * ratio**2))  # fmt: skip
    # ratio 1: Delta F = 0 exactly. atol: the closed form's terms (ln(s pi) <= 3.4,
    # pi mu^2 <= 68) carry float64 round-off ~eps64 * 70 = 1.6e-14; quad's epsrel 1e-12 on
    # the integral is 1e-12 on its log; the log-densities at the window centre, of size
    # <= 1e2, add ~1e-14. atol 1e-10 covers all of it with room.
    np.testing.assert_allclose(float(df), reference, rtol=1e-9, atol=1e-10)
    if ratio == 1e-7 and mu == 0.02:  # a near-zero weight: shrinking it is favoured
        assert float(df) > 0
    if ratio == 1e-7 and mu == 1.5:
        assert float(df) < 0
