"""Weight scores on one posterior (issue 37.3), against values computed by hand: the spike's
Delta F by Savage-Dickey, |mean| in weight units, log alpha, and pruning to a fraction of
all prunable entries with the already pruned ones counted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bmr_jax.bmr.scores import prune_to, weight_scores

# one layer, four weights: Z ~ N(m, 1/pi); W = 0.5 Z
MEAN = jnp.array([[0.1, -2.0, 0.5, 0.0]])
PRECISION = jnp.array([[100.0, 1.0, 4.0, 1e4]])
POSTERIOR = {"a": (MEAN, PRECISION)}
SCALE = {"a": 0.5}


def test_delta_f_is_the_savage_dickey_ratio_at_zero():
    """ln q(0) - ln p(0) for q = N(m, 1/pi), p = N(0, v), with scipy's densities."""
    prior_var = 2.0
    got = weight_scores("delta_f", POSTERIOR, SCALE, {"a": prior_var}, jax.random.key(0))["a"]
    sd = 1 / np.sqrt(np.asarray(PRECISION))
    expected = stats.norm.logpdf(0, np.asarray(MEAN), sd) - stats.norm.logpdf(0, 0, np.sqrt(2))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_magnitude_snr_and_random():
    key = jax.random.key(0)
    magnitude = weight_scores("magnitude", POSTERIOR, SCALE, {"a": 1.0}, key)["a"]
    np.testing.assert_allclose(magnitude, [[-0.05, -1.0, -0.25, 0.0]])  # -|0.5 m|
    snr = weight_scores("snr", POSTERIOR, SCALE, {"a": 1.0}, key)["a"]
    # log alpha = -ln(pi m^2): ln(1/1) = 0 for 0.1 at precision 100, -ln 4, -ln 1; m = 0: huge
    np.testing.assert_allclose(snr[0, :3], [0.0, -np.log(4.0), 0.0], atol=1e-5)
    assert snr[0, 3] > 60
    random = weight_scores("random", POSTERIOR, SCALE, {"a": 1.0}, key)["a"]
    assert random.shape == (1, 4) and len(np.unique(random)) == 4
    with pytest.raises(ValueError, match="unknown score 'size'"):
        weight_scores("size", POSTERIOR, SCALE, {"a": 1.0}, key)


def test_delta_f_and_snr_part_where_precisions_differ():
    """Weights 0 and 2 have the same squared z-score pi m^2 = 1; Delta F = (ln(v pi) - 1)/2
    prunes the more precise one first, log alpha cannot tell them apart."""
    key = jax.random.key(0)
    posterior = {"a": (jnp.array([[0.1, 0.5]]), jnp.array([[100.0, 4.0]]))}
    delta_f = weight_scores("delta_f", posterior, SCALE, {"a": 1.0}, key)["a"]
    np.testing.assert_allclose(delta_f, [[(np.log(100) - 1) / 2, (np.log(4) - 1) / 2]], rtol=1e-5)
    snr = weight_scores("snr", posterior, SCALE, {"a": 1.0}, key)["a"]
    assert float(snr[0, 0]) == pytest.approx(float(snr[0, 1]), abs=1e-5)


def test_prune_to_counts_every_prunable_entry_and_keeps_the_pruned():
    """Two prunable layers of 4 and a classifier of 2: 0.5 of the 8 prunable entries is 4,
    the highest scores first over both layers together; entry b[1] was pruned already and
    counts as one of the 4; the classifier is left alone."""
    scores = {"a": jnp.array([[4.0, 3.0, -1.0, 0.0]]), "b": jnp.array([[2.0, -9.0, -3.0, -2.0]]),
              "head": jnp.array([[9.0, 9.0]])}
    masks = {"a": jnp.ones((1, 4), bool), "b": jnp.array([[True, False, True, True]]),
             "head": jnp.ones((1, 2), bool)}
    prunable = {"a": True, "b": True, "head": False}
    new = prune_to(scores, masks, prunable, 0.5)
    assert np.asarray(new["a"]).tolist() == [[False, False, True, True]]
    assert np.asarray(new["b"]).tolist() == [[False, False, True, True]]
    assert np.asarray(new["head"]).tolist() == [[True, True]]
