"""The posterior predictive against a numpy reference on a linear softmax model.

The network is one ``nnx.Linear(5 -> 3)``: its forward pass is ``softmax(x W' + b)``. Under
the flat prior the only layer is the classifier, so ``W = c gamma Z`` with ``c = precision^-1/2``
(METHOD.md 2.1). The guide is mean-field with non-trivial locations and scales on ``Z`` and
on the log of the precision. The reference draws the same keys as
``evaluate.predictive_probs`` (``jax.random.split(key, samples)``, one guide draw per key via
``sample_latents``), builds ``W`` and ``b`` from each draw and averages the softmax in float64
numpy.

Tolerance (float32 against float64): the draws themselves are shared, so only the forward
pass and the average round differently. Per draw the float32 code forms ``c gamma Z`` (2
roundings per entry) and a dot product of ``fan_in + 1`` terms, so a logit is within
``(fan_in + 3) eps32 T`` of exact, with ``T`` the largest ``sum_k |x_k W_ik| + |b_i|``; the
softmax is 1-Lipschitz in the max-norm and adds ~4 eps32; summing ``S`` probabilities in
float32 and dividing by ``S`` adds <= ``S eps32``. ``atol`` below is that sum (about 1e-5;
a factor-2 error in a scale moves the probabilities by ~1e-1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmr_jax.bayes import guides, priors
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.inference import evaluate

pytestmark = pytest.mark.numerics  # scripts/device_check.sh runs these on a device

EPS32 = float(np.finfo(np.float32).eps)
IN, OUT, N, SAMPLES = 5, 3, 13, 40


class _Linear(nnx.Module):
    def __init__(self, rngs):
        self.head = nnx.Linear(IN, OUT, rngs=rngs)

    def __call__(self, x):
        return self.head(x)


@pytest.fixture(scope="module")
def tiny():
    """(bnet, guide, params, x, predictive): the linear softmax model with a mean-field guide
    whose parameters are set by hand, and one compiled predictive shared by the tests."""
    bnet = BayesianNetwork.from_module(_Linear(nnx.Rngs(0)), (IN,), priors.FlatPrior())
    init = bnet.init_latents()
    x0, y0 = jnp.zeros((2, IN)), jnp.zeros(2, jnp.int32)
    sites = guides.latent_sites(bnet.model, x0, y0, init_values=init)
    assert set(sites) == {"head/z", "head/precision"}
    guide = guides.MeanFieldGuide(sites, init)
    rng = np.random.default_rng(0)
    params = {
        "head/z/loc": jnp.asarray(rng.normal(0, 1.5, (OUT, IN + 1)), jnp.float32),
        "head/z/scale": jnp.asarray(rng.uniform(0.2, 0.8, (OUT, IN + 1)), jnp.float32),
        # LogNormal on the precision: median 4 (c = 0.5), log-scale 0.3
        "head/precision/loc": jnp.asarray(np.log(4.0), jnp.float32),
        "head/precision/scale": jnp.asarray(0.3, jnp.float32),
    }
    x = np.asarray(rng.normal(size=(N, IN)), np.float32)
    return bnet, guide, params, x, evaluate.make_predictive(bnet, guide)


_DRAW = {}


def _draws(guide, params, key, samples):
    """The guide draws predictive_probs uses: one per key of split(key, samples)."""
    if guide not in _DRAW:  # one compilation per guide
        _DRAW[guide] = jax.jit(lambda p, k: guides.sample_latents(guide, p, k))
    out = [_DRAW[guide](params, k) for k in jax.random.split(key, samples)]
    return [(np.asarray(d["head/z"], np.float64), float(d["head/precision"])) for d in out]


def _reference(draws, x, gamma):
    """float64 numpy mean over draws of softmax(x W' + b), and the tolerance (module doc)."""
    x = np.asarray(x, np.float64)
    total, largest = 0.0, 0.0
    for z, precision in draws:
        matrix = precision**-0.5 * gamma * z  # W = c gamma Z, c = precision^-1/2 (last layer)
        w, b = matrix[:, :IN], matrix[:, IN]
        logits = x @ w.T + b
        largest = max(largest, float(np.max(np.abs(x) @ np.abs(w).T + np.abs(b))))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        total = total + e / e.sum(axis=1, keepdims=True)
    atol = EPS32 * ((IN + 3) * largest + 4 + len(draws))
    return total / len(draws), atol


@pytest.mark.parametrize("gamma_kind", ["default", "random"])
def test_predictive_is_the_mean_softmax_over_the_same_guide_draws(tiny, gamma_kind):
    bnet, guide, params, x, predictive = tiny
    key = jax.random.key(3)
    if gamma_kind == "default":  # gamma=None: all multipliers 1
        gamma, gamma_np = None, np.ones((OUT, IN + 1))
    else:
        gamma_np = np.random.default_rng(1).uniform(0.5, 1.5, (OUT, IN + 1))
        gamma = {"head": jnp.asarray(gamma_np, jnp.float32)}
        gamma_np = np.asarray(gamma["head"], np.float64)  # the float32 values used
    probs = evaluate.predictive_probs(bnet, guide, params, x, key=key, samples=SAMPLES,
                                      gamma=gamma, predictive=predictive)  # fmt: skip
    expected, atol = _reference(_draws(guide, params, key, SAMPLES), x, gamma_np)
    assert probs.shape == (N, OUT) and atol < 2e-5
    np.testing.assert_allclose(probs, expected, rtol=0, atol=atol)
    # the draws matter: one draw's softmax is far from the average (not a point estimate)
    single, _ = _reference(_draws(guide, params, key, SAMPLES)[:1], x, gamma_np)
    assert np.abs(single - expected).max() > 0.05


def test_chunk_size_does_not_change_the_predictive(tiny):
    """Every chunk uses the same draws, so chunks of 1, 7 (7 + 6) and N give the same
    probabilities; they may differ only by float32 reordering inside the batched dot
    products, within the module's forward-pass bound."""
    bnet, guide, params, x, predictive = tiny
    key = jax.random.key(4)
    out = {c: evaluate.predictive_probs(bnet, guide, params, x, key=key, samples=SAMPLES,
                                        chunk_size=c, predictive=predictive)
           for c in (1, 7, N)}  # fmt: skip
    _, atol = _reference(_draws(guide, params, key, SAMPLES), x, np.ones((OUT, IN + 1)))
    for c in (1, 7):
        np.testing.assert_allclose(out[c], out[N], rtol=0, atol=atol)


def test_a_pruned_row_is_the_network_with_that_unit_zeroed(tiny):
    """gamma = 1e-12 on row 1 (class 1's weights and bias) equals, in numpy, the network with
    that row set to 0: class 1's logit is 0 for every input. The residual 1e-12 c |Z| sum |x|
    (< 1e-10) is far below the float32 tolerance."""
    bnet, guide, params, x, predictive = tiny
    key = jax.random.key(5)
    gamma = np.ones((OUT, IN + 1), np.float32)
    gamma[1] = 1e-12
    probs = evaluate.predictive_probs(bnet, guide, params, x, key=key, samples=SAMPLES,
                                      gamma={"head": jnp.asarray(gamma)},
                                      predictive=predictive)  # fmt: skip
    zeroed = np.ones((OUT, IN + 1))
    zeroed[1] = 0.0  # weights and bias of unit 1 exactly zero
    expected, atol = _reference(_draws(guide, params, key, SAMPLES), x, zeroed)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=atol)
    unpruned = evaluate.predictive_probs(bnet, guide, params, x, key=key, samples=SAMPLES,
                                         predictive=predictive)  # fmt: skip
    assert np.abs(unpruned - probs).max() > 0.05  # the pruning did change the predictive


def test_classification_metrics_by_hand():
    """ACC, NLL, LPD and ECE of a small predictive, computed by hand.

    argmax = (0, 1, 2, 2) against labels (0, 2, 2, 1): correct T F T F, ACC 1/2.
    p(label) = (0.7, 0.4, 0.4, 0.25): NLL = -mean ln p, LPD = sum ln p.
    ECE, 2 equal-mass bins on confidence (0.7, 0.5, 0.4, 0.5): sorted 0.4 (T), 0.5 (F) | 0.5
    (F), 0.7 (T) (the tie falls on the boundary, both sides wrong): bin gaps |1/2 - 0.45|
    and |1/2 - 0.6|, ECE = (0.05 + 0.1) / 2 = 0.075. With the default 20 bins each datum has
    its own bin: ECE = mean |correct - conf| = (0.3 + 0.5 + 0.6 + 0.5) / 4 = 0.475."""
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.25, 0.25, 0.5]],
                     np.float32)  # fmt: skip
    labels = np.array([0, 2, 2, 1])
    logs = np.log([0.7, 0.4, 0.4, 0.25])
    out = evaluate.classification_metrics(probs, labels, bins=2)
    assert set(out) == set(evaluate.CLASSIFICATION_METRICS)
    assert out["acc"] == 0.5
    # none of the values is near 0; float32 logs and means: rtol 1e-6
    np.testing.assert_allclose(out["nll"], -logs.mean(), rtol=1e-6)
    np.testing.assert_allclose(out["lpd"], logs.sum(), rtol=1e-6)
    np.testing.assert_allclose(out["ece"], 0.075, rtol=1e-5)  # float32 sums of 0.4..0.7
    np.testing.assert_allclose(evaluate.classification_metrics(probs, labels)["ece"], 0.475,
                               rtol=1e-6)  # fmt: skip
