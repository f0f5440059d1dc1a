"""Every documented config key reaches the run: set each to a value other than its default
and check what the run was handed (the setup, its trainer, and the loop's settings)."""

from __future__ import annotations

import re

import pytest

from bmr_jax import methods
from bmr_jax.bmr import Evidence
from bmr_jax.runs import config as config_module
from bmr_jax.runs import experiment
from bmr_jax.runs.config import Config, load_config
from tests.runs import QUICKSTART

NON_DEFAULT = {
    "seed": 5,
    "plugins": ["json"],  # any importable module
    "method": "bmr_ss",  # the default: the run's method is checked with bmr_units below
    "prior": "horseshoe",
    "prior_options": {"weight_wise": True, "tau0": 0.05},
    "data.name": "mnist",
    "data.padding": "zero",
    "data.validation": 5000,
    "net.name": "mlp",
    "net.preset": "small",
    "guide.init": "paper",
    "guide.init_scale": 0.05,
    "guide.init_radius": 1.5,
    "guide.estimator": "local",
    "guide.sparse_vd_clip": "step",  # Sparse VD only: tests/test_sparse_vd.py
    "guide.sparse_vd_variance": "alpha",  # Sparse VD only: tests/test_sparse_vd.py
    "train.blocks": 7,
    "train.steps_per_block": 11,
    "train.batch_size": 64,
    "train.lr": 0.003,
    "train.keep_checkpoints": 5,
    "train.data_parallel": True,
    "train.kl": "monte_carlo",
    "train.kl_warmup": [1, 3],
    "train.minibatches": "random",
    "train.optimizer": "adam",
    "train.lr_schedule": "linear_second_half",
    "train.on_nonfinite": "rollback",
    "train.rollback_factor": 0.3,
    "train.max_rollbacks": 1,
    "eval.samples": 3,
    "eval.chunk_size": 500,
    "eval.every": 2,
    "eval.shrink": False,
    "eval.mean_network": True,
    "bmr.warmup_blocks": 2,
    "bmr.refit_blocks": 3,
    "bmr.rule": "evidence",
    "bmr.rule_options": {"threshold": 0.5},
    "bmr.inclusion_rate": "alive",
    "bmr.within": "spike_and_slab",  # checked with bmr_group below
    "bmr.prune_classifier": True,
    # tracking reaches the run's trackers: tests/test_tracking.py
    "tracking.tensorboard": True,
    "tracking.mlflow": "sqlite:///mlflow.db",
    "tracking.mlflow_experiment": "other",
}


def _documented_keys() -> list[str]:
    return re.findall(r"^- ``([a-z_.]+)`` \[", config_module.__doc__, re.MULTILINE)


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key in ("data", "net", "guide", "train", "eval", "bmr",
                                               "tracking"):
            out.update(_flat(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


def test_the_documented_keys_are_the_schema():
    assert sorted(_documented_keys()) == sorted(_flat(Config().to_dict()))
    assert sorted(NON_DEFAULT) == sorted(_documented_keys())
    defaults = _flat(Config().to_dict())
    changed = {k for k, v in NON_DEFAULT.items() if v != defaults[k]}
    assert changed == set(NON_DEFAULT) - {"method"}


def _handed(monkeypatch, tmp_path, overrides):
    seen = {}

    class Seen(Exception):
        pass

    def fake_run(setup, dataset, *, evaluation, resume, hooks):
        seen.update(setup=setup, dataset=dataset, evaluation=evaluation)
        raise Seen

    monkeypatch.setattr(methods, "run", fake_run)
    config = load_config(QUICKSTART, overrides)
    with pytest.raises(Seen):
        experiment.run_experiment(config, tmp_path / "run", progress=False, log=lambda s: None)
    return config, seen


def test_every_key_reaches_the_run(monkeypatch, tmp_path):
    """Every key is handed on; where the built run shows it, its effect too: ``prior`` and
    ``prior_options`` (a horseshoe scale per weight of the first layer), ``data.validation``
    (55,000 training images, 5,000 evaluated on), ``net.name`` and ``net.preset`` (the small
    MLP's layer sizes)."""
    overrides = [f"{k}={v}" for k, v in NON_DEFAULT.items()
                 if k not in ("bmr.inclusion_rate", "bmr.within")
                 and not k.startswith(("tracking.", "guide.sparse_vd"))]  # fmt: skip
    config, seen = _handed(monkeypatch, tmp_path, [o.replace("'", "") for o in overrides])
    setup = seen["setup"]
    assert config.plugins == ("json",)
    assert seen["dataset"].name == "mnist" and seen["evaluation"] == config.eval
    # data.validation: 5,000 training images held out and evaluated on, the test set unused
    assert len(seen["dataset"].train) == 55_000 and len(seen["dataset"].test) == 5_000
    assert seen["dataset"].evaluated_on.startswith("validation")
    assert seen["evaluation"] == methods.EvalSettings(samples=3, chunk_size=500, every=2,
                                                      shrink=False, mean_network=True)
    assert setup.train == config.train and setup.bmr == config.bmr and setup.seed == 5
    assert setup.train == methods.TrainSettings(
        blocks=7, steps_per_block=11, batch_size=64, lr=0.003, keep_checkpoints=5,
        data_parallel=True, kl="monte_carlo", kl_warmup=(1.0, 3.0), minibatches="random",
        on_nonfinite="rollback", rollback_factor=0.3, max_rollbacks=1, optimizer="adam",
        lr_schedule="linear_second_half")
    assert setup.method.prior == "horseshoe" and type(setup.bnet.prior).__name__ == \
        "HorseshoePrior"  # fmt: skip
    assert setup.bnet.prior.weight_wise and setup.bnet.prior.tau0 == 0.05
    weight_scales = setup.trainer.params(setup.trainer.init())["hidden.0/weight/u/loc"]
    assert weight_scales.shape == (100, 785)  # a scale per weight of the first layer
    assert setup.method.rule == Evidence(threshold=0.5)
    assert [s.prunable for s in setup.bnet.view.bayesian_layers][-1]  # the classifier
    assert [s.name for s in setup.bnet.view.bayesian_layers][0] == "hidden.0"  # an MLP
    hidden = 785 * 100 + 3 * 101 * 100  # the small MLP: 4 x 100 hidden units
    assert sum(s.size for s in setup.bnet.view.layers) == hidden + 101 * 10
    trainer = setup.trainer
    assert trainer.batch_size == 64 and trainer.mesh is not None
    assert trainer.estimator == "local" and trainer.kl_warmup == (1.0, 3.0)
    assert trainer.learning_rate(trainer.init()) == pytest.approx(0.003)
    # Adam with the linear decay (tests/test_sparse_vd.py checks its steps): the scheduled
    # transformation's step count and Adam's moments sit in the optimiser state
    opt_state = repr(trainer.init().opt_state)
    assert "ScaleByAdamState" in opt_state and "ScaleByScheduleState" in opt_state


def test_inclusion_rate_and_the_method_reach_the_run(monkeypatch, tmp_path):
    _, seen = _handed(monkeypatch, tmp_path, ["method=bmr_units", "bmr.inclusion_rate=alive",
                                              "net.name=mlp", "net.preset=small"])  # fmt: skip
    setup = seen["setup"]
    assert setup.method.name == "bmr_units" and setup.method.rule.rate_over == "alive"
    assert setup.method.between == "units" and type(setup.guide).__name__ == "MatrixNormalGuide"


def test_within_reaches_the_structured_reduce(monkeypatch, tmp_path):
    """``bmr.within`` becomes group BMR's weight-wise rule, counting as bmr.inclusion_rate
    says, and prunes single weights inside kept units (the reduce step's masks)."""
    import jax.numpy as jnp

    from bmr_jax.bmr import SpikeAndSlab

    _, seen = _handed(monkeypatch, tmp_path, ["method=bmr_group", "bmr.within=spike_and_slab",
                                              "bmr.inclusion_rate=alive", "net.name=mlp",
                                              "net.preset=small"])  # fmt: skip
    setup = seen["setup"]
    assert setup.method.within == SpikeAndSlab(rate_over="alive")
    state = setup.trainer.init()
    masks = {s.name: jnp.ones(s.shape, bool) for s in setup.bnet.view.bayesian_layers}
    gamma = {k: jnp.ones(m.shape) for k, m in masks.items()}
    _, new, _, info = setup.between(state, masks, gamma, 2, None)
    assert "within" in info and set(info["within"]["zeta"]) >= {"hidden.0"}
    rows = new["hidden.0"].any(axis=1)
    assert (~new["hidden.0"][rows]).any()  # single weights pruned inside kept units


def test_prior_options_add_to_the_methods_own():
    """IVON + BMR's flat prior keeps its fixed layer precision when a config adds an option,
    and a replaced prior starts from no options."""
    ivon = methods.configured("ivon_bmr", prior_options={"concentration": 3.0})
    assert ivon.prior_options == {"fixed_precision": 1.0, "concentration": 3.0}
    horseshoe = methods.configured("ivon_bmr", prior="horseshoe", prior_options={"tau0": 0.1})
    assert horseshoe.prior_options == {"tau0": 0.1}
    config = load_config(QUICKSTART, ["prior_options={concentration: 3.0}"])
    assert config.prior_options == {"concentration": 3.0}
