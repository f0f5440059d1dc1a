"""bmr_jax.nets.initializers against Flax's own initialisers: the same bits, not just the same
distribution (a run started from either is the same run)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from bmr_jax.nets import create_net, initializers

SHAPES = [(784, 100), (100, 10), (1, 1), (5, 5, 1, 6), (4, 4, 3, 64), (257, 3)]


def _bits(x):
    return np.asarray(x).view(np.uint32)


@pytest.mark.parametrize("shape", SHAPES)
def test_lecun_normal_and_normal_equal_flax_bit_for_bit(shape):
    key = jax.random.key(11)
    ours, flax_ = initializers.lecun_normal(key, shape), nnx.initializers.lecun_normal()(key, shape)
    assert ours.shape == shape and ours.dtype == flax_.dtype
    np.testing.assert_array_equal(_bits(ours), _bits(flax_))
    np.testing.assert_array_equal(_bits(initializers.normal(0.02)(key, shape)),
                                  _bits(nnx.initializers.normal(0.02)(key, shape)))  # fmt: skip
    # the scale is Flax's: the variance 1 / fan_in (fan_in = 784 for (784, 100), 25 for a 5x5
    # kernel of one channel) of a normal truncated at 2 sd
    fan_in = shape[-2] * int(np.prod(shape[:-2]))
    if np.prod(shape) > 10_000:
        assert np.var(np.asarray(ours)) == pytest.approx(1 / fan_in, rel=0.05)


def test_uniform_equals_jax_bit_for_bit():
    key = jax.random.key(5)
    for shape in SHAPES:
        ours = initializers.uniform(key, shape, -2.0, 2.0)
        np.testing.assert_array_equal(_bits(ours), _bits(jax.random.uniform(key, shape,
                                                                            minval=-2, maxval=2)))
        assert float(ours.min()) >= -2 and float(ours.max()) < 2


def test_under_tracing_they_fall_back_to_flax():
    key = jax.random.key(3)
    traced = jax.jit(lambda k: initializers.lecun_normal(k, (30, 10)))(key)
    np.testing.assert_allclose(traced, nnx.initializers.lecun_normal()(key, (30, 10)), rtol=1e-6)
    abstract = nnx.eval_shape(lambda: create_net("vit", 10, (32, 32, 1), "small",
                                                 rngs=nnx.Rngs(0)))  # fmt: skip
    assert abstract.head.kernel.shape == (64, 10)


NETWORKS = [("mlp", 28), ("lenet5", 32), ("lenet_300_100", 28), ("lenet5_caffe", 28),
            ("vit", 32), ("mixer", 32)]  # fmt: skip


@pytest.mark.parametrize("name, size", NETWORKS)
def test_every_network_starts_where_flax_defaults_start_it(name, size, monkeypatch):
    ours = nnx.state(create_net(name, 10, (size, size, 1), "small", rngs=nnx.Rngs(7)))
    for key, value in [("kernel_init", nnx.initializers.lecun_normal()),
                       ("bias_init", nnx.initializers.zeros_init())]:  # fmt: skip
        monkeypatch.setitem(initializers.DENSE, key, value)
    monkeypatch.setitem(initializers.NORM, "scale_init", nnx.initializers.ones_init())
    monkeypatch.setitem(initializers.NORM, "bias_init", nnx.initializers.zeros_init())
    monkeypatch.setattr(initializers, "normal", nnx.initializers.normal)
    reference = nnx.state(create_net(name, 10, (size, size, 1), "small", rngs=nnx.Rngs(7)))
    ours, reference = nnx.to_flat_state(ours), nnx.to_flat_state(reference)
    assert [p for p, _ in ours] == [p for p, _ in reference]
    for (path, a), (_, b) in zip(ours, reference, strict=True):
        a, b = np.asarray(a[...]), np.asarray(b[...])
        assert a.dtype == b.dtype, path
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=str(path))
