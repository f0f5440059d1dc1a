"""The model zoo: parameter counts against the reference table, shapes, one training step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmr_jax import data, nets
from bmr_jax.data import Split
from bmr_jax.errors import ShapeMismatchError, UnknownNameError
from bmr_jax.inference import baseline

FASHION = (
    (32, 32, 1),
    (28, 28, 1),
    10,
)  # (shape for conv/ViT/Mixer, shape for dense nets, classes)
CIFAR10 = ((32, 32, 3), (32, 32, 3), 10)
CIFAR100 = ((32, 32, 3), (32, 32, 3), 100)

# ../shared/docs/REFERENCE_RESULTS.md, "Parameter counts of the reference networks"
REFERENCE_COUNTS = {
    "mlp": (1_149_010, 2_293_010, 2_338_100),
    "lenet5": (61_706, 550_362, 573_492),
    "vit": (3_186_954, 3_195_146, 3_218_276),
    "mixer": (1_987_722, 1_995_914, 2_019_044),
}


def _abstract(name, shape, classes, preset="paper"):
    return nnx.eval_shape(lambda: nets.create_net(name, classes, shape, preset, rngs=nnx.Rngs(0)))


def _input_shape(name, dataset):
    return dataset[0] if nets.get_net_spec(name).image_size else dataset[1]


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
@pytest.mark.parametrize("column, dataset", list(enumerate([FASHION, CIFAR10, CIFAR100])))
def test_paper_parameter_counts_equal_the_reference(name, column, dataset):
    net = _abstract(name, _input_shape(name, dataset), dataset[2])
    assert nets.count_params(net) == REFERENCE_COUNTS[name][column]


def test_literature_parameter_counts():
    """LeNet-300-100 on MNIST: 784*300+300 + 300*100+100 + 100*10+10 = 266,610.
    LeNet-5-Caffe on MNIST: 20*25+20 + 50*500+50 + 800*500+500 + 500*10+10 = 431,080 (the
    "430.5K" of Molchanov et al. 2017, Table 1, counts the same weights and biases)."""
    assert nets.count_params(_abstract("lenet_300_100", (28, 28, 1), 10)) == 266_610
    assert nets.count_params(_abstract("lenet5_caffe", (28, 28, 1), 10)) == 431_080


def test_registry():
    assert nets.list_nets() == ["mlp", "lenet5", "lenet_300_100", "lenet5_caffe", "vit", "mixer"]
    for name in nets.list_nets():
        assert set(nets.get_net_spec(name).presets) == {"paper", "small"}
    with pytest.raises(UnknownNameError, match="unknown network 'resnet'"):
        nets.create_net("resnet", 10, (32, 32, 1), rngs=nnx.Rngs(0))
    with pytest.raises(UnknownNameError, match="unknown preset of vit 'huge'"):
        nets.create_net("vit", 10, (32, 32, 1), "huge", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", ["mlp", "lenet5", "lenet_300_100", "lenet5_caffe", "vit", "mixer"])
def test_small_preset_is_smaller(name):
    shape = _input_shape(name, CIFAR10)
    paper = nets.count_params(_abstract(name, shape, 10, "paper"))
    small = nets.count_params(_abstract(name, shape, 10, "small"))
    assert small < paper / 3


@pytest.fixture(scope="module")
def tiny_batch():
    """16 real mnist_mini images, padded and unpadded."""
    raw = data.load_raw("mnist_mini")
    return {
        size: Split(d.train.images[:16], d.train.labels[:16])
        for size, d in ((32, data.prepare(raw, 32)), (None, data.prepare(raw)))
    }


@pytest.mark.parametrize("preset", ["small", "paper"])
@pytest.mark.parametrize("name", ["mlp", "lenet5", "lenet_300_100", "lenet5_caffe", "vit", "mixer"])
def test_forward_shape_and_training_steps(name, preset, tiny_batch):
    batch = tiny_batch[nets.get_net_spec(name).image_size]
    net = nets.create_net(name, 10, batch.images.shape[1:], preset, rngs=nnx.Rngs(0))
    # jitted: run eagerly, every operation of the forward pass is an XLA program of its own
    logits = nnx.jit(lambda module, x: module(x))(net, jnp.asarray(batch.images))
    assert logits.shape == (16, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    result = baseline.fit(
        net, batch, steps=8, batch_size=16, optimizer=optax.adam(1e-3), progress=False
    )
    assert np.all(np.isfinite(result.losses))
    assert result.losses[-1] < 0.8 * result.losses[0]  # the same 16 images every step


def test_dropout_is_random_in_training_and_off_in_evaluation():
    x = jnp.ones((4, 28, 28, 1))
    net = nets.create_net("mlp", 10, (28, 28, 1), "small", rngs=nnx.Rngs(0), dropout=0.5)
    net.train()
    assert not jnp.allclose(net(x), net(x))
    net.eval()
    np.testing.assert_array_equal(net(x), net(x))
    plain = nets.create_net("mlp", 10, (28, 28, 1), "small", rngs=nnx.Rngs(0))
    assert jax.tree.leaves(nnx.state(plain, nnx.RngState)) == []  # no dropout, no RNG state
    with pytest.raises(ValueError, match="dropout rate must be in"):
        nets.create_net("mlp", 10, (28, 28, 1), rngs=nnx.Rngs(0), dropout=1.0)


def test_dropout_training_advances_the_rng():
    raw = data.load_raw("mnist_mini")
    batch = data.prepare(raw).train
    net = nets.create_net("lenet5_caffe", 10, (28, 28, 1), "small", rngs=nnx.Rngs(0), dropout=0.2)
    count = lambda: int(jax.tree.leaves(nnx.state(net, nnx.RngCount))[0])  # noqa: E731
    before = count()
    baseline.fit(
        net, Split(batch.images[:64], batch.labels[:64]), steps=3, batch_size=32, progress=False
    )
    assert count() > before


def test_shape_mismatch_errors():
    net = nets.create_net("lenet5", 10, (32, 32, 1), rngs=nnx.Rngs(0))
    with pytest.raises(
        ShapeMismatchError, match=r"lenet5 was built for inputs of shape \(32, 32, 1\)"
    ):
        net(jnp.zeros((2, 28, 28, 1)))
    with pytest.raises(ShapeMismatchError, match="not divisible by patch 4"):
        nets.create_net("vit", 10, (30, 30, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ShapeMismatchError, match="too small"):
        nets.create_net("lenet5", 10, (16, 16, 1), rngs=nnx.Rngs(0))
