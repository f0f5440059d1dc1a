"""Evaluating on the shrunk network (``eval.shrink``): the same predictive as the full network.

Reference: the full network's predictive with the same posterior draws (same keys), which
the shrunk one must match to float tolerance, while a factor-2 error (a removed unit that
was not zero) would move the probabilities far beyond it.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmr_jax import data, methods
from bmr_jax.bayes.model import PRUNED_GAMMA
from bmr_jax.inference import evaluate, shrunk
from bmr_jax.runs.config import load_config
from bmr_jax.runs.experiment import run_experiment
from tests.runs import QUICKSTART, TINY


def _unit_masks(setup, rng):
    masks = {}
    for spec in setup.bnet.view.bayesian_layers:
        mask = rng.random(spec.shape) < 0.7
        if spec.prunable:
            mask[rng.random(spec.rows) < 0.4] = False
        masks[spec.name] = mask
    return masks


def _built(net, size, data_dir):
    """``(dataset, setup, params, full predictive)``: the posterior's locations at 30x their
    start, so that the predictive is far from uniform."""
    dataset = data.load("mnist_mini", image_size=size, data_dir=data_dir)
    setup = methods.build("bmr_ss", dataset, net=net, preset="small")
    params = setup.trainer.params(setup.trainer.init())
    params = {k: v * 30.0 if k.endswith("/z/loc") else v for k, v in params.items()}
    return dataset, setup, params, evaluate.make_predictive(setup.bnet, setup.guide)


@pytest.fixture(scope="module")
def mlp_small(data_dir):
    """The small MLP (4 x 100, swish) of both MLP tests: one compilation of its predictive."""
    return _built("mlp", 28, data_dir)


def _probs(setup, params, images, gamma, predictive):
    """The predictive of ``predictive`` for every comparison here: chunks of 150 images, the
    same 4 posterior draws (one key)."""
    return evaluate.predictive_probs(setup.bnet, setup.guide, params, images,
                                     key=jax.random.key(5), samples=4, gamma=gamma,
                                     chunk_size=150, predictive=predictive)  # fmt: skip


@pytest.mark.parametrize("net, size", [("mlp", 28), ("vit", 32)])
def test_the_shrunk_predictive_is_the_full_one(net, size, data_dir, monkeypatch, request):
    from bmr_jax.nets import vit

    if net == "mlp":
        dataset, setup, params, full_predictive = request.getfixturevalue("mlp_small")
    else:
        # two of the small ViT's four blocks: a shrunk block feeds another one through the
        # residual stream, and the compilation of four took most of this test's time
        two_blocks = dataclasses.replace(vit.VIT_PRESETS["small"], depth=2)
        monkeypatch.setitem(vit.VIT_PRESETS, "small", two_blocks)
        dataset, setup, params, full_predictive = _built(net, size, data_dir)
    masks = _unit_masks(setup, np.random.default_rng(3))
    gamma = {k: jnp.where(m, 1.0, PRUNED_GAMMA) for k, m in masks.items()}
    kept = shrunk.kept_units(setup.bnet, masks,
                             shrunk.links_of(setup.bnet, sequential=setup.sequential))
    assert kept is not None
    rows = sum(s.rows for s in setup.bnet.view.layers)
    assert sum(len(r) for r, _ in kept.values()) < 0.95 * rows  # ViT: residual rows stay
    images = dataset.test.images[:300]

    def probs(predictive):
        return _probs(setup, params, images, gamma, predictive)

    full = probs(full_predictive)
    apply = shrunk.shrunk_apply(setup.bnet, shrunk.shape_of(kept), dataset.image_shape)
    small = evaluate.make_predictive(setup.bnet, setup.guide, apply=apply)
    # float32 sums in another order, which the ViT's layer norms amplify: a fresh-clone run
    # measured 2.9e-5 on 2 of 3000 probabilities
    atol = 2e-5 if net == "mlp" else 1e-4
    np.testing.assert_allclose(probs(functools.partial(small, aux=shrunk.index_arrays(kept))),
                               full, atol=atol, rtol=0)  # fmt: skip
    assert full.max(axis=1).mean() > 0.3  # not uniform: the comparison has something to see


# a target of 97 % pruned at the first reduce leaves whole units pruned (dead rows)
PRUNES_UNITS = [*TINY, "train.steps_per_block=10", "bmr.rule=target",
                "bmr.rule_options={schedule: {final: 0.97, begin: 1, end: 2}}"]  # fmt: skip


def test_a_run_evaluated_on_the_shrunk_network_has_the_same_metrics(tmp_path, monkeypatch):
    built = []
    original = shrunk.shrunk_apply
    monkeypatch.setattr(shrunk, "shrunk_apply", lambda *a: built.append(1) or original(*a))
    monkeypatch.setattr(shrunk, "WORTH", 1.0)  # shrink even where FLOPs fall less than 2x
    records = {}
    for shrink in ("true", "false"):
        out = tmp_path / shrink
        run_experiment(load_config(QUICKSTART, [*PRUNES_UNITS, f"eval.shrink={shrink}"]), out,
                       progress=False, log=lambda s: None)  # fmt: skip
        records[shrink] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert built == [1]  # blocks 2 and 3 evaluated on one shrunk network
    for a, b in zip(records["true"], records["false"], strict=True):
        assert a["loss"] == b["loss"] and a["pruned_fraction"] == b["pruned_fraction"]
        for key in ("acc", "nll", "ece"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_a_network_is_shrunk_only_when_that_halves_its_flops(data_dir):
    dataset = data.load("mnist_mini", image_size=32, data_dir=data_dir)
    setup = methods.build("bmr_ss", dataset, net="lenet5", preset="small")
    view = setup.bnet.view
    masks = {s.name: np.ones(s.shape, bool) for s in view.layers}
    masks["dense.0"][:60] = False  # 60 of 84 dense units: 2 x 60 x 205 of 833k FLOPs
    links = shrunk.links_of(setup.bnet, sequential=True)
    kept = shrunk.kept_units(setup.bnet, masks, links, ladder=False)
    assert len(kept["dense.0"][0]) == 24 and len(kept["head"][1]) == 25
    kept = shrunk.kept_units(setup.bnet, masks, links)  # 84 x 2^(-8/4) = 21 < 24: rung 25
    assert len(kept["dense.0"][0]) == 25 and len(kept["head"][1]) == 26
    assert shrunk.kept_units(setup.bnet, masks, links, worth=shrunk.WORTH) is None
    masks["convs.0"][:5] = False  # 5 of 6 first channels: conv1 and most of conv2 go
    assert shrunk.kept_units(setup.bnet, masks, links, worth=shrunk.WORTH) is not None


def test_rungs_by_hand():
    # 500 x 2^(-j/4): 500, 420.4, 353.6, ..., 62.5, 52.6, 44.2 -> rounded up: ..., 63, 53, 45
    assert [shrunk.rung(k, 500) for k in (500, 421, 250, 47, 53, 54)] == [500, 421, 250, 53,
                                                                          53, 63]  # fmt: skip
    # 100: ..., 50, 42.04, 35.4 -> 50, 43, 36; the bottom rung is one unit
    assert [shrunk.rung(k, 100) for k in (40, 43, 44, 1, 0)] == [43, 43, 50, 1, 1]


def test_masks_of_one_rung_share_a_compilation_and_stay_exact(mlp_small):
    dataset, setup, params, full = mlp_small  # 4 x 100 units, swish
    view = setup.bnet.view
    links = shrunk.links_of(setup.bnet, sequential=True)
    images = dataset.test.images[:300]
    compiled, results = None, []
    for dead in (np.arange(60), np.r_[np.arange(40), np.arange(78, 100)]):  # 40 and 38 kept
        masks = {s.name: np.ones(s.shape, bool) for s in view.layers}
        masks["hidden.0"][dead] = False  # their rows, bias included: they output swish(0) = 0
        kept = shrunk.kept_units(setup.bnet, masks, links)
        # 40 or 38 kept -> rung 43 of 100: the lowest-numbered dead units are put back
        rows = kept["hidden.0"][0]
        assert len(rows) == 43 and len(kept["hidden.1"][1]) == 44  # + the bias column
        assert set(np.setdiff1d(np.arange(100), dead)) < set(rows.tolist())
        assert list(np.setdiff1d(rows, np.setdiff1d(np.arange(100), dead))) == list(
            dead[: 43 - (100 - len(dead))])
        if compiled is None:
            apply = shrunk.shrunk_apply(setup.bnet, shrunk.shape_of(kept), dataset.image_shape)
            compiled = evaluate.make_predictive(setup.bnet, setup.guide, apply=apply)
        gamma = {s.name: jnp.where(masks[s.name], 1.0, PRUNED_GAMMA)
                 for s in view.bayesian_layers}  # fmt: skip
        small = _probs(setup, params, images, gamma,
                       functools.partial(compiled, aux=shrunk.index_arrays(kept)))
        np.testing.assert_allclose(small, _probs(setup, params, images, gamma, full), atol=2e-5,
                                   rtol=0)  # fmt: skip
        results.append(small)
    assert compiled._cache_size() == 1  # one program for both masks
    assert np.abs(results[0] - results[1]).max() > 1e-3  # and they are different networks
