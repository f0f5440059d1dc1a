"""Gradual magnitude pruning (method ``gmp``, Zhu & Gupta 2017) and the final refit phase
(``bmr.refit_blocks``): the scores against |W| computed by hand from the guide's values, the
cubic schedule's fractions against its closed form, frozen masks in the refit blocks, and a real
MNIST run that must keep learning while it prunes."""

from __future__ import annotations

import numpy as np
import pytest

from bmr_jax import data, methods, nets
from bmr_jax.methods.between.magnitude import magnitude_scores

SCHEDULE = {"schedule": {"final": 0.9, "begin": 2, "end": 4}, "scope": "global"}


@pytest.fixture(scope="module")
def run():
    ds = data.load("mnist", image_size=nets.get_net_spec("lenet_300_100").image_size)
    setup = methods.build(
        "gmp", ds, net="lenet_300_100", preset="small", seed=137,
        train=methods.TrainSettings(blocks=5, steps_per_block=200, batch_size=100),
        bmr=methods.BmrSettings(rule_options=SCHEDULE, refit_blocks=1),
    )  # fmt: skip
    records = methods.run(setup, ds, evaluation=methods.EvalSettings(every=1),
                          hooks=methods.RunHooks(progress=False))  # fmt: skip
    return setup, records


def test_scores_are_minus_the_weight_magnitudes(run):
    setup, _ = run
    params = setup.trainer.params(setup.state)
    scores = magnitude_scores(setup.bnet, setup.guide, params)
    for spec in setup.bnet.view.bayesian_layers:  # the flat prior: W = c / 10 * Z (hidden)
        c = 1.0 / np.sqrt(np.asarray(params[f"{spec.name}/precision/loc"]))
        scale = c if spec.is_last else 0.1 * c
        w = scale * np.asarray(params[f"{spec.name}/z/loc"])
        np.testing.assert_allclose(np.asarray(scores[spec.name]), -np.abs(w), rtol=1e-6)


def test_the_cubic_schedule_then_a_refit_with_frozen_masks(run):
    """The cubic schedule, then ``bmr.refit_blocks: 1``: the last block keeps the masks."""
    setup, records = run
    sizes = {s.name: s.size for s in setup.bnet.view.bayesian_layers}
    prunable = sum(n for name, n in sizes.items() if name != "head")
    share = prunable / sum(sizes.values())  # the classifier is not pruned
    expected = [0.0, 0.0, 0.9 * (1 - 0.5**3), 0.9, 0.9]  # s_t = s_f (1 - (1 - t)^3)
    fractions = [r["pruned_fraction"] for r in records]
    np.testing.assert_allclose(fractions, np.array(expected) * share, atol=2e-5)
    assert records[-1]["pruned_by_layer"]["head"] == 0.0


def test_it_keeps_learning_while_it_prunes(run):
    """Measured here (seed 137): ACC 0.893, 0.922, 0.919, 0.920, 0.926 after blocks 1-5 at
    pruned 0, 0, 0.785, 0.897, 0.897."""
    _, records = run
    assert records[3]["acc"] >= 0.9 and records[-1]["acc"] >= 0.9
    assert records[-1]["loss"] < records[0]["loss"]
