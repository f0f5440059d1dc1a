"""Every network of the zoo goes through the Bayesian engine (its own file, so that the
test workers of ``make test`` run it beside the method runs of test_methods.py)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from bmr_jax import data, methods
from bmr_jax.methods.settings import GuideSettings


@pytest.mark.parametrize("net, estimator", [
    ("mlp", "reparam"), ("lenet_300_100", "reparam"), ("lenet5_caffe", "reparam"),
    ("vit", "reparam"), ("mixer", "reparam"), ("vit", "local"), ("mixer", "local"),
])  # fmt: skip
def test_mean_field_svi_runs_on_every_network(net, estimator, monkeypatch):
    """Every network of the zoo (small preset) goes through the Bayesian engine: 30 Flat-FF
    steps on mnist_mini give finite, decreasing losses and a finite 2-sample predictive. The
    ViT and the Mixer also with the local estimator, whose layers are called as Flax's
    attention calls them (with keyword options).

    The ViT and the Mixer keep one of their small preset's four blocks: every block is the
    same code, and each one more costs compilation time (measured here: 106 s for the ViT
    with one block, 193 s with four, under load); the four-block preset is built and trained
    in test_nets.py."""
    from bmr_jax import nets
    from bmr_jax.inference import evaluate
    from bmr_jax.nets import mixer, vit

    one_block = {"vit": (vit.VIT_PRESETS, "depth"), "mixer": (mixer.MIXER_PRESETS, "blocks")}
    if net in one_block:
        presets, field = one_block[net]
        monkeypatch.setitem(presets, "small", dataclasses.replace(presets["small"], **{field: 1}))

    ds = data.load("mnist_mini", image_size=nets.get_net_spec(net).image_size)
    setup = methods.build("flat_ff", ds, net=net, preset="small", seed=0,
                          guide=GuideSettings(estimator=estimator))
    state = setup.trainer.init()
    state, losses = setup.trainer.run_block(state, 30, key=jax.random.key(0), progress=False)
    assert np.all(np.isfinite(losses)) and losses[-5:].mean() < losses[:5].mean()
    probs = evaluate.predictive_probs(
        setup.bnet, setup.guide, setup.trainer.params(state), ds.test.images[:50],
        key=jax.random.key(0), samples=2,
    )  # fmt: skip
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
