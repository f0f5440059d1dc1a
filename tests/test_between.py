"""The between-blocks steps, each alone and inside a real run's loop (mnist_mini, the small
MLP): nothing, BMR-S&S with each registered decision rule, structured BMR, BMR-RHS.

The expectations are computed independently, in numpy from the guide's parameters: the spike
Delta F of a weight with posterior ``N(mu, 1/pi)`` under its ``N(0, 1)`` prior is
``ln N(0; mu, 1/pi) - ln N(0; 0, 1) = (ln pi - pi mu^2) / 2`` (METHOD.md 4.1)."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmr_jax import data, methods
from bmr_jax.bmr.rhs import RHSConfig

QUIET = methods.RunHooks(progress=False)
TRAIN = methods.TrainSettings(blocks=1, steps_per_block=60, batch_size=100)


@pytest.fixture(scope="module")
def mnist_mini():
    return data.load("mnist_mini")


@pytest.fixture(scope="module")
def trained(mnist_mini):
    """``trained(method)``: a setup after one block (the warm-up) and the state the loop holds
    then, each method trained once."""
    done = {}

    def train(method="bmr_ss", prune_classifier=False):
        if (method, prune_classifier) not in done:
            spec = methods.METHODS.get(method)
            if spec.rhs is not None:  # a shorter hyper-parameter fit than the reference's
                spec = replace(spec, rhs=RHSConfig(steps=300, particles=4))
            setup = methods.build(spec, mnist_mini, net="mlp", preset="small", seed=3,
                                  train=TRAIN, bmr=methods.BmrSettings(
                                      prune_classifier=prune_classifier))  # fmt: skip
            methods.run(setup, mnist_mini, evaluation=methods.EvalSettings(samples=1),
                        hooks=QUIET)  # fmt: skip
            done[method, prune_classifier] = setup, methods.RunState(
                1, setup.state, setup.masks, setup.gamma)  # fmt: skip
        return done[method, prune_classifier]

    return train


def _with_rule(setup, **bmr):
    """``setup`` whose between-blocks step uses the rule that ``bmr`` configures (its layer
    view, hence which layers are prunable, stays the one it was built with)."""
    method = methods.configured(setup.method.name, methods.BmrSettings(**bmr))
    return replace(setup, method=method, between=methods.make_between_blocks(method,
                   setup.trainer))  # fmt: skip


def _continue(setup, dataset, state):
    """Block 2 of the same run through the loop (its between step jitted inside it), from a
    copy of ``state`` (the steps donate theirs)."""
    setup = replace(setup, train=replace(setup.train, blocks=2))
    state = state._replace(train=jax.tree.map(jnp.copy, state.train))
    return methods.run(setup, dataset, evaluation=methods.EvalSettings(samples=1),
                       resume=state, hooks=QUIET)  # fmt: skip


def _spike_delta_f(setup, state) -> dict[str, np.ndarray]:
    params = setup.trainer.params(state.train)
    out = {}
    for layer in setup.guide.layers():
        mu = np.asarray(params[f"{layer}/z/loc"], np.float64)
        pi = 1.0 / np.asarray(params[f"{layer}/z/scale"], np.float64) ** 2
        out[layer] = 0.5 * (np.log(pi) - pi * mu**2)
    return out


def _prunable(setup):
    return {s.name: s.prunable for s in setup.bnet.view.bayesian_layers}


def _apply(setup, state, block=2):
    return setup.between(state.train, state.masks, state.gamma, block, jax.random.key(0))


def test_nothing_returns_its_inputs(trained):
    setup, state = trained("flat_ff")
    train, masks, gamma, info = _apply(setup, state)
    assert train is state.train and masks is state.masks and gamma is state.gamma
    assert info == {}


@pytest.mark.parametrize(("threshold", "prune_classifier"),
                         [(-1.0, False), (2.0, False), (2.0, True)])  # fmt: skip
def test_evidence_rule_prunes_where_delta_f_exceeds_its_threshold(trained, mnist_mini,
                                                                   threshold,
                                                                   prune_classifier):  # fmt: skip
    setup, state = trained(prune_classifier=prune_classifier)
    assert _prunable(setup)["head"] is prune_classifier  # bmr.prune_classifier (METHOD.md 4.4)
    # bmr.rule / bmr.rule_options: the evidence rule at this threshold
    setup = _with_rule(setup, rule="evidence", rule_options={"threshold": threshold})
    df = _spike_delta_f(setup, state)
    _, masks, gamma, _ = _apply(setup, state)
    if prune_classifier:  # the classifier loses weights, as the closed form says it should
        assert 0 < np.sum(df["head"] > threshold + 1e-3) <= np.sum(~np.asarray(masks["head"]))
    for layer, prunable in _prunable(setup).items():
        # entries within float32 rounding of the threshold may go either way
        sure = np.abs(df[layer] - threshold) > 1e-3 * (1 + np.abs(df[layer]))
        expected = df[layer] <= threshold if prunable else np.ones_like(df[layer], bool)
        np.testing.assert_array_equal(np.asarray(masks[layer])[sure], expected[sure])
        np.testing.assert_array_equal(np.asarray(gamma[layer]), np.where(
            np.asarray(masks[layer]), np.float32(1.0), np.float32(1e-12)))  # fmt: skip
    records = _continue(setup, mnist_mini, state)
    total = sum(m.size for m in masks.values())
    pruned = 1 - sum(int(np.sum(m)) for m in masks.values()) / total
    assert records[-1]["block"] == 2 and records[-1]["pruned_fraction"] == pytest.approx(pruned)


def test_target_rule_reaches_its_target_in_every_prunable_layer(trained, mnist_mini):
    schedule = {"final": 0.6, "begin": 1, "end": 2}  # reached at block 2
    setup, state = trained()
    setup = _with_rule(setup, rule="target", rule_options={"schedule": schedule})
    _, masks, _, info = _apply(setup, state)
    assert float(info["target"]) == pytest.approx(0.6)
    for layer, prunable in _prunable(setup).items():
        kept = int(np.sum(masks[layer]))
        size = masks[layer].size
        assert kept == (size - int(np.ceil(0.6 * size)) if prunable else size)
    df = _spike_delta_f(setup, state)  # the pruned ones are those with the highest Delta F
    first = next(layer for layer, p in _prunable(setup).items() if p)
    m = np.asarray(masks[first])
    assert df[first][~m].min() >= df[first][m].max() - 1e-4 * np.abs(df[first]).max()
    records = _continue(setup, mnist_mini, state)
    assert records[-1]["pruned_fraction"] > 0.4


def test_unit_rule_prunes_whole_rows_by_their_summed_delta_f(trained, mnist_mini):
    setup, state = trained()
    setup = _with_rule(setup, rule="unit_spike_and_slab", rule_options={"rho": 0.5})
    df = _spike_delta_f(setup, state)
    _, masks, _, info = _apply(setup, state)
    for layer, prunable in _prunable(setup).items():
        m = np.asarray(masks[layer])
        assert np.all(m.all(axis=1) | ~m.any(axis=1))  # rows go whole
        if prunable:  # prior log odds ln(0.5/0.5) = 0 plus the row's summed Delta F
            row = df[layer].sum(axis=1)
            sure = np.abs(row) > 1e-3 * np.abs(df[layer]).sum(axis=1)
            np.testing.assert_array_equal(m.any(axis=1)[sure], (row <= 0)[sure])
            np.testing.assert_allclose(info["unit_log_odds"][layer], row, rtol=1e-3, atol=1e-3)
    _continue(setup, mnist_mini, state)


def test_structured_bmr_prunes_units_of_a_matrix_normal_guide():
    """The units step alone, on a LeNet-300-100's matrix-normal guide at its start (a
    matrix-normal SVI step costs half a minute to compile on a CPU: the loop it runs in is the
    one the mean-field steps above run in; a unit is a row of the layer's matrix, for a dense
    layer as for a convolution's channel)."""
    dataset = data.load("mnist_mini", image_size=28)
    setup = methods.build("bmr_units", dataset, net="lenet_300_100", preset="small", seed=3)
    state = methods.initial_state(setup)
    shrunk = {f"{layer}/z/loc": setup.trainer.params(state.train)[f"{layer}/z/loc"]
              * jnp.where(jnp.arange(len(mask))[:, None] % 2 == 0, 1.0, 0.0)
              for layer, mask in state.masks.items()}  # fmt: skip
    train = setup.trainer.set_params(state.train, shrunk)  # odd units at 0: no evidence for them
    _, masks, _, info = setup.between(train, state.masks, state.gamma, 2, jax.random.key(0))
    for layer, prunable in _prunable(setup).items():
        m = np.asarray(masks[layer])
        assert np.all(m.all(axis=1) | ~m.any(axis=1))  # rows go whole
        if not prunable:
            assert m.all()
    assert "zeta" in info and any(not np.all(masks[k]) for k, p in _prunable(setup).items() if p)


def _median_logits(setup, train, gamma, images):
    from numpyro import handlers

    params = setup.trainer.params(train)
    latents = setup.guide.median(params)
    with handlers.seed(rng_seed=0), handlers.substitute(data={**params, **latents}):
        net_params = setup.bnet.network_params(gamma)
    return np.asarray(setup.bnet.apply(net_params, jnp.asarray(images), train=False))


def test_rhs_changes_gamma_and_masks_and_the_function_carries_over(trained, mnist_mini):
    setup, state = trained("bmr_rhs")
    train, masks, gamma, info = _apply(setup, state)
    assert np.isfinite(float(info["fit_loss"]))
    prunable = [layer for layer, p in _prunable(setup).items() if p]
    assert any(not np.all(np.asarray(gamma[k]) == 1.0) for k in prunable)  # fitted scales
    for k in prunable:  # pruned where the fitted multiplier is under the threshold 0.1
        np.testing.assert_array_equal(np.asarray(masks[k]), np.asarray(gamma[k]) >= 0.1)
    # the network at the posterior median computes nearly the same function after the
    # rescaling as before it (the write-back moves Z so that W = gamma Z carries over)
    images = mnist_mini.test.images[:500]
    before = _median_logits(setup, state.train, state.gamma, images).argmax(1)
    after = _median_logits(setup, train, gamma, images).argmax(1)
    assert np.mean(before == after) > 0.95
