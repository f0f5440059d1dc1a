"""The reference code's choices (METHOD.md 4.7) as settings: the uniform guide start, the
one-sample KL and the per-step random minibatches, checked against closed forms and Monte
Carlo moments with stated tolerances."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmr_jax import data, methods
from bmr_jax.bayes.guides import LatentSite, uniform_start
from bmr_jax.methods import GuideSettings, TrainSettings


@pytest.fixture(scope="module")
def mini():
    return data.load("mnist_mini")


def _build(mini, method="bmr_ss", guide=None, **train):
    return methods.build(method, mini, net="mlp", preset="small", seed=3,
                         guide=guide or GuideSettings(),
                         train=TrainSettings(batch_size=50, **train))  # fmt: skip


def test_uniform_start_has_the_moments_of_uniform_minus_two_two():
    """U(-2, 2): mean 0, variance 4/3; on the log scale for positive sites; sites drawn
    independently. Tolerances: 5 standard errors of 20,000 draws."""
    sites = {"a/z": LatentSite("a/z", (200, 100), False),
             "b/z": LatentSite("b/z", (200, 100), False),
             "t": LatentSite("t", (20_000,), True)}  # fmt: skip
    values = uniform_start(sites, jax.random.key(0))
    a, b = np.ravel(values["a/z"]), np.ravel(values["b/z"])
    log_t = np.log(np.asarray(values["t"]))
    n = 20_000
    for x in (a, log_t):
        assert x.min() >= -2.0 and x.max() <= 2.0
        assert abs(x.mean()) < 5 * np.sqrt(4 / 3 / n)
        # the variance of x^2 is E x^4 - (E x^2)^2 = 16/5 - 16/9
        assert abs(x.var() - 4 / 3) < 5 * np.sqrt((16 / 5 - 16 / 9) / n)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    radius = uniform_start(sites, jax.random.key(0), radius=0.5)
    np.testing.assert_allclose(radius["a/z"], values["a/z"] / 4, rtol=1e-5, atol=1e-6)


def test_guide_start_reaches_the_guide(mini):
    """``guide.init``: the network's initial weights, or the paper's uniform draw;
    ``guide.init_scale``: every posterior standard deviation starts there (0.05), else at the
    start's own (0.01 network, 0.1 paper)."""
    network, paper = _build(mini), _build(mini, guide=GuideSettings(init="paper"))
    narrow = _build(mini, guide=GuideSettings(init="paper", init_scale=0.05))
    start = {name: network.trainer.params(network.trainer.init()) for name in ["network"]}
    start["paper"] = paper.trainer.params(paper.trainer.init())
    start["narrow"] = narrow.trainer.params(narrow.trainer.init())
    z = network.bnet.init_latents()
    for layer in network.guide.layers():
        loc = f"{layer}/z/loc"
        np.testing.assert_allclose(start["network"][loc], z[f"{layer}/z"], rtol=1e-6)
        np.testing.assert_allclose(start["network"][f"{layer}/z/scale"], 0.01, rtol=1e-5)
        assert np.abs(start["paper"][loc]).max() <= 2.0 and np.std(start["paper"][loc]) > 1.0
        np.testing.assert_allclose(start["paper"][f"{layer}/z/scale"], 0.1, rtol=1e-5)
        np.testing.assert_allclose(start["narrow"][f"{layer}/z/scale"], 0.05, rtol=1e-5)
        np.testing.assert_array_equal(start["narrow"][loc], start["paper"][loc])  # same seed
        # the layer precision's log-normal guide: location uniform in [-2, 2], scale 0.1
        assert -2.0 <= float(start["paper"][f"{layer}/precision/loc"]) <= 2.0
        np.testing.assert_allclose(start["paper"][f"{layer}/precision/scale"], 0.1, rtol=1e-5)


def test_monte_carlo_kl_is_unbiased_for_the_analytic_kl(mini):
    """``train.kl``: both ELBOs draw the same posterior sample from a key, so their
    difference is the one-sample KL estimate minus the closed-form KL: mean 0 over keys (5
    standard errors), and not identically 0 (the estimate is really one sample)."""
    analytic = _build(mini, method="flat_ff", guide=GuideSettings(init="paper"))
    sampled = _build(mini, method="flat_ff", guide=GuideSettings(init="paper"), kl="monte_carlo")
    params = analytic.trainer.params(analytic.trainer.init())
    x, y = jnp.asarray(mini.train.images[:50]), jnp.asarray(mini.train.labels[:50])
    gamma, n = analytic.bnet.full_gamma(), len(mini.train)

    def losses(trainer):
        def loss(key):
            return trainer.elbo.loss(key, params, trainer.model, trainer.scaled_guide, x, y,
                                     gamma, n)  # fmt: skip

        return np.asarray(jax.jit(jax.vmap(loss))(jax.random.split(jax.random.key(1), 400)))

    difference = losses(sampled.trainer) - losses(analytic.trainer)
    assert difference.std() > 1e-3
    assert abs(difference.mean()) < 5 * difference.std() / np.sqrt(len(difference))


def test_random_minibatches_depend_on_the_step_only(mini):
    """Two blocks of 3 steps equal one block of 6 (the batch and the noise of step t are
    functions of the seed and t), and a step folded inside equals one given the folded key."""
    setup = _build(mini, minibatches="random")
    trainer, key = setup.trainer, jax.random.key(5)
    _, whole = trainer.run_block(trainer.init(), 6, key=key, progress=False)
    state, first = trainer.run_block(trainer.init(), 3, key=key, progress=False)
    _, second = trainer.run_block(state, 3, key=key, progress=False)
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))
    gamma = setup.bnet.full_gamma()
    _, folded = trainer.step(key, trainer.init(), gamma, fold=True)
    _, given = trainer.step(jax.random.fold_in(key, 0), trainer.init(), gamma)
    assert float(folded) == float(given)
    epochs = _build(mini)  # the same seed, but epochs of a permutation: other batches
    _, other = epochs.trainer.run_block(epochs.trainer.init(), 6, key=key, progress=False)
    assert not np.array_equal(whole, other)


REFERENCE = {"guide.init": "paper", "bmr.inclusion_rate": "all", "train.kl": "monte_carlo",
             "train.minibatches": "random", "data.padding": "zero"}  # fmt: skip


def _choices(config) -> dict:
    return {"guide.init": config.guide.init, "bmr.inclusion_rate": config.bmr.inclusion_rate,
            "train.kl": config.train.kl, "train.minibatches": config.train.minibatches,
            "data.padding": config.data.padding}  # fmt: skip


def test_every_reference_config_selects_the_reference_behaviour_and_ours_grids_do_not():
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.grid import load_grid
    from tests.runs import QUICKSTART, REPO

    ours = ("mnist_frontier", "mnist_structured", "fashion_mnist_structured",
            "mnist_sparse_vd")  # issues 14, 36, 37
    files = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name not in ours)
    assert len(files) == 62  # 3 datasets x 4 nets x 5 methods, and the 2 MNIST anchors
    for folder in ours:
        for path in (REPO / "configs" / folder).glob("*.yaml"):
            if not path.name.startswith("budget-"):
                assert _choices(load_config(path)) != REFERENCE, path
    for path in files:
        assert _choices(load_config(path)) == REFERENCE, path
    assert _choices(load_config(QUICKSTART)) != REFERENCE  # the demo runs our defaults
    for grid in sorted((REPO / "experiments").glob("*_ours.yaml")):
        for run in load_grid(grid):
            ours = _choices(run.config)
            assert all(ours[k] != v for k, v in REFERENCE.items() if k != "bmr.inclusion_rate")
