"""The optax pruning wrapper: global ranking by hand, schedule reached exactly, masked params
exactly zero, pruned entries stay pruned, and a real (few-step) magnitude-pruning run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmr_jax import data, nets
from bmr_jax.bmr import PolynomialSchedule
from bmr_jax.bmr.pruning import (
    _path_name,
    global_masks,
    kernels_and_biases_except,
    magnitude,
    prune_by_score,
    pruned_fraction,
)
from bmr_jax.inference import baseline


def test_global_masks_by_hand():
    scores = {"a": jnp.array([[5.0, 1.0], [3.0, 0.5]]), "b": jnp.array([2.0, 4.0]),
              "c": jnp.array([0.0])}  # fmt: skip
    alive = jax.tree.map(lambda s: jnp.ones(s.shape, bool), scores)
    alive["a"] = alive["a"].at[0, 0].set(False)  # already pruned: ranks lowest despite 5.0
    selected = {"a": True, "b": True, "c": False}
    # 6 selected entries, fraction 0.5 -> prune 3: the pruned 5.0, then 0.5 and 1.0
    masks = global_masks(scores, alive, selected, 0.5)
    np.testing.assert_array_equal(masks["a"], [[False, False], [True, False]])
    np.testing.assert_array_equal(masks["b"], [True, True])
    np.testing.assert_array_equal(masks["c"], [True])  # not selected: untouched
    # a fraction below what is already pruned keeps the old pruning (pruning is permanent)
    np.testing.assert_array_equal(global_masks(scores, alive, selected, 0.0)["a"], alive["a"])


@pytest.fixture(scope="module")
def mini():
    return data.load("mnist_mini", image_size=28)


def test_magnitude_pruning_reaches_the_schedule_on_real_data(mini):
    net = nets.create_net("lenet_300_100", 10, mini.image_shape, "small", rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    prunable = kernels_and_biases_except(["head"])
    schedule = PolynomialSchedule(final=0.9, begin=1, end=4)
    optimizer = prune_by_score(optax.adam(1e-3), score=magnitude, schedule=schedule, every=20,
                               prunable=prunable)  # fmt: skip
    step = baseline.make_train_step(graphdef, optimizer)
    state = baseline.TrainState(params, rest, optimizer.init(params))
    order = jax.random.permutation(jax.random.key(0), 9600).reshape(-1, 64)
    images, labels = jnp.asarray(mini.train.images), jnp.asarray(mini.train.labels)
    fractions, previous = [], None
    for i in range(100):
        state, _ = step(state, images, labels, order, i % len(order))
        masks = jax.tree.map(np.asarray, state.opt_state.masks)  # the state is donated
        if previous is not None:  # pruning is permanent
            for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(previous), strict=True):
                assert not np.any(m & ~p)
        previous = masks
        if (i + 1) % 20 == 0:
            fractions.append(pruned_fraction(masks, state.params, prunable))
    selected = sum(x.size for k, x in jax.tree_util.tree_leaves_with_path(state.params)
                   if "head" not in jax.tree_util.keystr(k))  # fmt: skip
    expected = [float(schedule(b)) for b in range(1, 6)]
    np.testing.assert_allclose(fractions, np.ceil(np.array(expected) * selected) / selected)
    for m, p in zip(jax.tree.leaves(state.opt_state.masks), jax.tree.leaves(state.params),
                    strict=True):  # fmt: skip
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)  # exactly zero where masked
    assert np.all(np.asarray(state.params["head"]["kernel"][...]) != 0)  # head never pruned
    nnx.update(net, state.params, state.rest)
    assert baseline.accuracy(net, mini.test) > 0.8  # 100 steps, 90 % pruned: still learns


def test_the_predicate_selects_equinox_weights_and_refuses_to_select_none():
    """Issue 38: on an Equinox MLP (leaves ``weight``/``bias``) the predicate matched biases
    only, so pruning left every weight while the pruned share looked like the network's."""
    import equinox as eqx

    model = eqx.nn.MLP(4, 3, 8, 2, key=jax.random.key(0))  # layers 0-2: 4-8, 8-8, 8-3
    params = eqx.filter(model, eqx.is_array)
    prunable = kernels_and_biases_except(["layers.2"])
    chosen = sorted(jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(
        params) if prunable(_path_name(p), x))  # fmt: skip
    assert chosen == [".layers[0].bias", ".layers[0].weight", ".layers[1].bias",
                      ".layers[1].weight"]  # fmt: skip
    optimizer = prune_by_score(optax.adam(1e-3), score=magnitude,
                               schedule=PolynomialSchedule(final=0.5), every=1,
                               prunable=prunable)  # fmt: skip
    optimizer.init(params)  # selects weight matrices: accepted
    only_biases = prune_by_score(optax.adam(1e-3), score=magnitude,
                                 schedule=PolynomialSchedule(final=0.5), every=1,
                                 prunable=lambda name, leaf: name.endswith("bias"))  # fmt: skip
    with pytest.raises(ValueError, match="selects no weight matrix .*leaf names are: bias"):
        only_biases.init(params)
