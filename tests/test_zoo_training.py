"""Slow: every network's small preset trains on real Fashion-MNIST on a CPU in minutes.

Each run: Adam (lr 1e-3), batch 120, 1,000 steps (2 epochs), then test accuracy on the 10,000
official test images. Thresholds are set 1-3 points under what was measured on the 2-core
development machine (seed 137, `make test-slow`): mlp 0.860, lenet5 0.863, lenet_300_100 0.858,
lenet5_caffe 0.872, vit 0.829 (165 s), mixer 0.872 (96 s), so a broken network or data
pipeline fails while seed noise does not.
"""

from __future__ import annotations

import time

import optax
import pytest
from flax import nnx

from bmr_jax import data, nets
from bmr_jax.inference import baseline

# net -> minimum test accuracy after 1,000 steps
THRESHOLDS = {
    "mlp": 0.84,
    "lenet5": 0.85,
    "lenet_300_100": 0.84,
    "lenet5_caffe": 0.86,
    "vit": 0.80,
    "mixer": 0.85,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(THRESHOLDS))
def test_small_preset_trains_on_fashion_mnist(name):
    spec = nets.get_net_spec(name)
    ds = data.load("fashion_mnist", image_size=spec.image_size)
    net = nets.create_net(name, 10, ds.image_shape, "small", rngs=nnx.Rngs(137))
    start = time.perf_counter()
    result = baseline.fit(
        net, ds.train, steps=1000, batch_size=120, optimizer=optax.adam(1e-3), progress=False
    )
    acc = baseline.accuracy(net, ds.test)
    print(
        f"{name} small: {nets.count_params(net):,} parameters, test accuracy {acc:.4f}, "
        f"{time.perf_counter() - start:.1f} s, {result.steps_per_second:.1f} steps/s"
    )
    assert acc >= THRESHOLDS[name]
