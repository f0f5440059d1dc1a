"""The layer view: computation order, matrix shapes, and the round trip to the parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmr_jax import nets
from bmr_jax.bayes.layers import build_layer_view, from_matrix, to_matrix


def _view(name, shape, preset="small"):
    net = nets.create_net(name, 10, shape, preset, rngs=nnx.Rngs(0))
    return net, build_layer_view(net, shape)


def test_vit_layers_in_computation_order():
    _, view = _view("vit", (32, 32, 1))
    names = view.names()
    # attention projections are stored alphabetically (key, out, query, value) but called
    # query, key, value, out
    assert names[:7] == [
        "embed.proj",
        "blocks.0.attention.query",
        "blocks.0.attention.key",
        "blocks.0.attention.value",
        "blocks.0.attention.out",
        "blocks.0.mlp.fc1",
        "blocks.0.mlp.fc2",
    ]
    assert names[-1] == "head" and len(names) == 1 + 4 * 6 + 1
    shapes = {s.name: s.shape for s in view.layers}
    assert shapes["embed.proj"] == (64, 4 * 4 * 1 + 1)  # patch 4, one channel, bias
    assert shapes["blocks.0.attention.query"] == (64, 65)  # 4 heads x 16 = 64 rows
    assert shapes["blocks.0.attention.out"] == (64, 65)
    assert shapes["head"] == (10, 65)
    assert [s.is_last for s in view.layers].count(True) == 1 and view.last.name == "head"
    assert view.last.prunable is False and all(s.prunable for s in view.layers[:-1])


def test_mixer_token_mlp_is_a_layer_over_patches():
    _, view = _view("mixer", (32, 32, 1))
    shapes = {s.name: s.shape for s in view.layers}
    assert shapes["blocks.0.token_mlp.fc1"] == (128, 64 + 1)  # 64 patches in, 128 hidden out
    assert shapes["blocks.0.token_mlp.fc2"] == (64, 128 + 1)
    assert shapes["blocks.0.channel_mlp.fc1"] == (128, 64 + 1)


def test_lenet5_matrices_count_every_weight_and_bias():
    net, view = _view("lenet5", (32, 32, 1), "paper")
    assert [s.shape for s in view.layers] == [
        (6, 26), (16, 151), (120, 401), (84, 121), (10, 85)
    ]  # fmt: skip
    assert sum(s.size for s in view.layers) == nets.count_params(net) == 61_706


def test_linear_matrix_by_hand():
    linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    linear.kernel[...] = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # (in, out)
    linear.bias[...] = jnp.array([7.0, 8.0])
    view = build_layer_view(linear, (3,))
    (spec,) = view.layers
    matrix = to_matrix(spec, linear.kernel[...], linear.bias[...])
    # row i = output unit i: its fan-in weights, then its bias
    np.testing.assert_array_equal(matrix, [[1.0, 3.0, 5.0, 7.0], [2.0, 4.0, 6.0, 8.0]])
    kernel, bias = from_matrix(spec, matrix)
    np.testing.assert_array_equal(kernel, linear.kernel[...])
    np.testing.assert_array_equal(bias, linear.bias[...])


def test_conv_matrix_row_is_one_output_channel():
    conv = nnx.Conv(2, 3, (2, 2), rngs=nnx.Rngs(0))
    view = build_layer_view(conv, (4, 4, 2))
    (spec,) = view.layers
    matrix = to_matrix(spec, conv.kernel[...], conv.bias[...])
    assert matrix.shape == (3, 2 * 2 * 2 + 1)
    np.testing.assert_array_equal(matrix[1, :-1], conv.kernel[...][..., 1].reshape(-1))


@pytest.mark.parametrize("name", ["mlp", "lenet5", "vit", "mixer"])
def test_write_round_trip_and_effect(name):
    shape = (32, 32, 1) if name != "mlp" else (28, 28, 1)
    net, view = _view(name, shape)
    params = nnx.state(net, nnx.Param)
    matrices = view.matrices(params)
    same = view.write(params, matrices)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(a, b)
    # zeroing the classifier's matrix makes every logit zero
    zeroed = view.write(params, {"head": jnp.zeros(view.last.shape)})
    graphdef, _, rest = nnx.split(net, nnx.Param, ...)
    logits = nnx.merge(graphdef, zeroed, rest)(jnp.ones((2, *shape)))
    np.testing.assert_array_equal(logits, 0.0)


def test_predicates_choose_bayesian_and_prunable_layers():
    net = nets.create_net("vit", 10, (32, 32, 1), "small", rngs=nnx.Rngs(0))
    view = build_layer_view(
        net,
        (32, 32, 1),
        bayesian=lambda n: not n.startswith("embed"),
        prunable=lambda n: "attention" not in n,
    )
    specs = {s.name: s for s in view.layers}
    assert not specs["embed.proj"].bayesian and not specs["embed.proj"].prunable
    assert specs["blocks.0.attention.query"].bayesian
    assert not specs["blocks.0.attention.query"].prunable
    assert specs["blocks.0.mlp.fc1"].prunable
    assert len(view.bayesian_layers) == len(view.layers) - 1


def test_the_classifier_is_prunable_only_when_asked():
    net = nets.create_net("lenet_300_100", 10, (28, 28, 1), "paper", rngs=nnx.Rngs(0))
    default = build_layer_view(net, (28, 28, 1))
    asked = build_layer_view(net, (28, 28, 1), prune_classifier=True)
    assert [(s.name, s.prunable) for s in default.layers] == [
        ("hidden.0", True), ("hidden.1", True), ("head", False)]
    assert [(s.name, s.prunable) for s in asked.layers] == [
        ("hidden.0", True), ("hidden.1", True), ("head", True)]
    assert [s.is_last for s in asked.layers] == [False, False, True]  # its prior is unchanged
    # the other predicates still apply to the classifier
    kept_whole = build_layer_view(net, (28, 28, 1), prune_classifier=True,
                                  prunable=lambda n: n != "head")  # fmt: skip
    assert not kept_whole.layers[-1].prunable
