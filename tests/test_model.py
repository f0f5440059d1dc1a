"""The NumPyro model over a Flax network: initial function, likelihood scaling, the loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from numpyro import handlers
from scipy import stats

from bmr_jax import data, nets
from bmr_jax.bayes import guides, priors
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.inference.train import SVITrainer


def _lenet(dropout=0.0):
    net = nets.create_net("lenet5", 10, (32, 32, 1), rngs=nnx.Rngs(0), dropout=dropout)
    return net


def test_model_at_the_initial_latents_is_the_network():
    net = _lenet()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 1)), jnp.float32)
    net.eval()
    expected = net(x)
    for prior in (priors.FlatPrior(), priors.HorseshoePrior()):
        bnet = BayesianNetwork.from_module(net, (32, 32, 1), prior)
        with handlers.seed(rng_seed=0), handlers.substitute(data=bnet.init_latents()):
            logits = bnet.model(x, jnp.zeros(4, jnp.int32), train=False)
        np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_likelihood_is_scaled_to_the_full_data_size():
    bnet = BayesianNetwork.from_module(_lenet(), (32, 32, 1), priors.FlatPrior())
    x, y = jnp.zeros((8, 32, 32, 1)), jnp.zeros(8, jnp.int32)
    with handlers.seed(rng_seed=0), handlers.substitute(data=bnet.init_latents()):
        trace = handlers.trace(bnet.model).get_trace(x, y, num_data=1000)
    assert trace["y"]["scale"] == 1000 / 8
    assert trace["y"]["fn"].batch_shape == (8,)


def test_map_loss_at_the_start_by_hand():
    """The per-datum loss of the MAP guide at its initial point, computed independently:
    -(N/B sum_batch ln p(y|x,W) + sum ln N(z; 0, 1) + sum ln Gamma(prec; 2, 2)) / N."""
    ds = data.load("mnist_mini", image_size=32)
    net = _lenet()
    bnet = BayesianNetwork.from_module(net, ds.image_shape, priors.FlatPrior())
    init = bnet.init_latents()
    x0, y0 = jnp.asarray(ds.train.images[:2]), jnp.asarray(ds.train.labels[:2])
    guide = guides.DeltaGuide(guides.latent_sites(bnet.model, x0, y0, init_values=init), init)
    trainer = SVITrainer(bnet, guide, ds.train, optimizer=optax.sgd(0.0), batch_size=100)
    state = trainer.init()
    index = np.asarray(trainer.epoch_order(0)[0])  # step 0 reads batch 0 of epoch 0
    _, loss = trainer.step(jax.random.key(0), state, bnet.full_gamma())

    net.eval()
    logits = np.asarray(net(jnp.asarray(ds.train.images[index])), np.float64)
    log_lik = logits[np.arange(100), ds.train.labels[index]] - np.log(np.exp(logits).sum(1))
    log_prior = sum(
        stats.norm.logpdf(np.asarray(v, np.float64)).sum()
        for k, v in init.items()
        if k.endswith("/z")
    ) + sum(stats.gamma(a=2, scale=0.5).logpdf(1.0) for k in init if k.endswith("/precision"))
    n = len(ds.train)
    expected = -(n / 100 * log_lik.sum() + log_prior) / n
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_other_parameters_can_be_latent():
    net = nets.create_net("vit", 10, (32, 32, 1), "small", rngs=nnx.Rngs(0))
    point = BayesianNetwork.from_module(net, (32, 32, 1), priors.FlatPrior())
    latent = BayesianNetwork.from_module(
        net, (32, 32, 1), priors.FlatPrior(), other_prior_scale=1.0
    )
    x, y = jnp.zeros((2, 32, 32, 1)), jnp.zeros(2, jnp.int32)
    sites_point = guides.latent_sites(point.model, x, y, init_values=point.init_latents())
    sites_latent = guides.latent_sites(latent.model, x, y, init_values=latent.init_latents())
    extra = set(sites_latent) - set(sites_point)
    assert {"blocks.0.norm1.scale", "cls_token", "positions"} <= extra
    with handlers.seed(rng_seed=0), handlers.trace() as trace:
        latent.model(x, y)
    # LayerNorm scales are centred on 1, everything else on 0
    assert float(trace["blocks.0.norm1.scale"]["fn"].base_dist.base_dist.loc) == 1.0
    assert float(trace["positions"]["fn"].base_dist.base_dist.loc) == 0.0
    with handlers.seed(rng_seed=0), handlers.substitute(data=latent.init_latents()):
        np.testing.assert_allclose(
            latent.model(x, y, train=False), (net.eval(), net(x))[1], atol=1e-5
        )
    jax.clear_caches()
