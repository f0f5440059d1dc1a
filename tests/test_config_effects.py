"""What every config key *does* (issue 38): a table names, for each key of the schema, the
tests that check its effect on the run -- a batch of that size, a guide start of that scale, a
reduce step at those blocks, chunks of that length -- not only that the value was received
(``test_config_keys.py`` checks that). A key added to the schema without an entry here fails
:func:`test_every_key_has_an_effect_test`; an entry must name tests that exist and that name
the key in their source.

The effects not checked elsewhere are checked here, most of them on one real run of the
wired pipeline (``run_experiment``, as ``bmr-jax run``) whose steps, evaluations and reduce
steps are watched, against the defaults' run (``tiny_run``).
"""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmr_jax.inference import evaluate
from bmr_jax.inference import train as train_module
from bmr_jax.runs import experiment
from bmr_jax.runs.config import Config, load_config
from tests.runs import QUICKSTART, TINY, records
from tests.test_config_keys import _flat

HERE = "test_config_effects.py"
EFFECTS = {
    "seed": [f"{HERE}::test_seed_sets_the_start_and_the_data_order"],
    "plugins": [f"{HERE}::test_a_plugins_prior_is_the_runs_prior",
                f"{HERE}::test_a_plugin_in_the_current_directory_is_found_by_the_command",
                "test_docs.py::test_extending_tutorial_runs"],
    "method": ["test_config_keys.py::test_inclusion_rate_and_the_method_reach_the_run"],
    "prior": ["test_config_keys.py::test_every_key_reaches_the_run"],
    "prior_options": ["test_config_keys.py::test_every_key_reaches_the_run",
                      f"{HERE}::test_a_plugins_prior_is_the_runs_prior"],
    "data.name": [f"{HERE}::test_data_name_loads_that_dataset"],
    "data.padding": ["test_wiring.py::test_padding_sets_the_border_of_a_padded_image"],
    "data.validation": ["test_config_keys.py::test_every_key_reaches_the_run"],
    "net.name": ["test_config_keys.py::test_every_key_reaches_the_run"],
    "net.preset": ["test_config_keys.py::test_every_key_reaches_the_run"],
    "guide.init": ["test_wiring.py::test_init_radius_bounds_the_paper_start"],
    "guide.init_scale": ["test_reference_mode.py::test_guide_start_reaches_the_guide"],
    "guide.init_radius": ["test_wiring.py::test_init_radius_bounds_the_paper_start"],
    "guide.estimator": [f"{HERE}::test_the_local_estimator_draws_noise_per_datum"],
    "guide.sparse_vd_clip": ["test_sparse_vd.py::test_the_paper_codes_clipping_and_variance_by_hand",  # noqa: E501
                             "test_sparse_vd.py::test_the_reference_options_reach_the_trainer_and_are_refused_elsewhere"],  # noqa: E501
    "guide.sparse_vd_variance": ["test_sparse_vd.py::test_the_paper_codes_clipping_and_variance_by_hand",  # noqa: E501
                                 "test_sparse_vd.py::test_the_reference_options_reach_the_trainer_and_are_refused_elsewhere"],  # noqa: E501
    "train.blocks": [f"{HERE}::test_blocks_and_steps_per_block_are_what_runs"],
    "train.steps_per_block": [f"{HERE}::test_blocks_and_steps_per_block_are_what_runs"],
    "train.batch_size": [f"{HERE}::test_batch_size_is_the_batch_a_step_trains_on"],
    "train.lr": [f"{HERE}::test_lr_and_optimizer_set_the_first_steps_size"],
    "train.keep_checkpoints": ["test_reliability.py::test_keep_checkpoints_keeps_the_newest"],
    "train.data_parallel": ["test_parallel.py::test_four_devices_agree_with_one"],
    "train.kl": ["test_reference_mode.py::test_monte_carlo_kl_is_unbiased_for_the_analytic_kl"],
    "train.kl_warmup": ["test_wiring.py::test_the_trainer_warms_up_both_model_and_guide",
                        "test_wiring.py::test_the_kl_weight_ramps_from_its_start_epoch"],
    "train.minibatches": [f"{HERE}::test_minibatches_epochs_cover_the_data_random_do_not"],
    "train.optimizer": [f"{HERE}::test_lr_and_optimizer_set_the_first_steps_size"],
    "train.lr_schedule": ["test_sparse_vd.py::test_adam_with_the_papers_linear_decay_over_the_second_half"],  # noqa: E501
    "train.on_nonfinite": ["test_reliability.py::test_nonfinite_loss_rolls_back_with_a_lower_learning_rate",  # noqa: E501
                           "test_reliability.py::test_nonfinite_loss_stops_naming_block_and_step"],
    "train.rollback_factor": ["test_reliability.py::test_nonfinite_loss_rolls_back_with_a_lower_learning_rate"],  # noqa: E501
    "train.max_rollbacks": ["test_reliability.py::test_max_rollbacks_bounds_the_rollbacks"],
    "eval.samples": [f"{HERE}::test_eval_samples_and_chunk_size_are_what_the_predictive_gets"],
    "eval.chunk_size": [f"{HERE}::test_eval_samples_and_chunk_size_are_what_the_predictive_gets"],
    "eval.every": ["test_wiring.py::test_every_kth_block_and_the_last_are_evaluated_each_with_its_own_key"],  # noqa: E501
    "eval.shrink": ["test_shrunk_eval.py::test_a_run_evaluated_on_the_shrunk_network_has_the_same_metrics"],  # noqa: E501
    "eval.mean_network": ["test_sparse_vd.py::test_sparse_vd_learns_and_prunes_on_mnist",
                          f"{HERE}::test_eval_samples_and_chunk_size_are_what_the_predictive_gets"],
    "bmr.warmup_blocks": [f"{HERE}::test_warmup_and_refit_blocks_bound_the_reduce_steps"],
    "bmr.refit_blocks": [f"{HERE}::test_warmup_and_refit_blocks_bound_the_reduce_steps",
                         "test_gmp.py::test_the_cubic_schedule_then_a_refit_with_frozen_masks"],
    "bmr.rule": ["test_between.py::test_evidence_rule_prunes_where_delta_f_exceeds_its_threshold",
                 f"{HERE}::test_warmup_and_refit_blocks_bound_the_reduce_steps"],
    "bmr.rule_options": ["test_between.py::test_evidence_rule_prunes_where_delta_f_exceeds_its_threshold",  # noqa: E501
                         f"{HERE}::test_warmup_and_refit_blocks_bound_the_reduce_steps"],
    "bmr.inclusion_rate": ["test_bmr_rules.py::test_inclusion_rate_over_the_layer_or_the_survivors_by_hand",  # noqa: E501
                           "test_config_keys.py::test_inclusion_rate_and_the_method_reach_the_run"],
    "bmr.within": ["test_config_keys.py::test_within_reaches_the_structured_reduce"],
    "bmr.prune_classifier": [f"{HERE}::test_prune_classifier_lets_the_rule_prune_the_head",
                             "test_between.py::test_evidence_rule_prunes_where_delta_f_exceeds_its_threshold"],  # noqa: E501
    "tracking.tensorboard": ["test_tracking.py::test_tensorboard_logs_every_block_once_across_an_interruption"],  # noqa: E501
    "tracking.mlflow": ["test_tracking.py::test_mlflow_logs_params_every_block_once_and_the_artefacts"],  # noqa: E501
    "tracking.mlflow_experiment": ["test_tracking.py::test_mlflow_logs_params_every_block_once_and_the_artefacts"],  # noqa: E501
}


def _test_source(node: str) -> str:
    """The source of test function ``file::name`` (docstring included), or ``""``."""
    file, name = node.split("::")
    tree = ast.parse((Path(__file__).parent / file).read_text())
    for item in tree.body:
        if isinstance(item, ast.FunctionDef) and item.name == name:
            return ast.get_source_segment((Path(__file__).parent / file).read_text(), item)
    return ""


def test_every_key_has_an_effect_test():
    """The table covers the schema exactly, and each named test exists and names its key
    (the whole dotted key, in its code or its docstring)."""
    schema = sorted(_flat(Config().to_dict()))
    assert sorted(EFFECTS) == schema, "a config key without an effect test, or a stale one"
    missing = [f"{key}: {node}" for key, nodes in EFFECTS.items() for node in nodes
               if key not in _test_source(node)]  # fmt: skip
    assert not missing, f"no such test, or it does not name its key: {missing}"


def _setup(*overrides):
    config = load_config(QUICKSTART, [*TINY, *overrides])
    dataset = experiment.load_dataset(config)
    return dataset, experiment.build_setup(config, dataset)


def test_seed_sets_the_start_and_the_data_order():
    """``seed``: the same seed gives the same initial guide and the same first epoch's
    batches, another seed other ones (both differ in every layer)."""
    starts, orders = {}, {}
    for name, seed in (("a", 5), ("again", 5), ("b", 6)):
        _, setup = _setup(f"seed={seed}")
        starts[name] = jax.device_get(setup.trainer.params(setup.trainer.init()))
        orders[name] = np.asarray(setup.trainer.epoch_order(0))
    for key, value in starts["a"].items():
        np.testing.assert_array_equal(value, starts["again"][key])
        if key.endswith("/z/loc"):
            assert not np.array_equal(value, starts["b"][key]), key
    np.testing.assert_array_equal(orders["a"], orders["again"])
    assert np.mean(orders["a"] == orders["b"]) < 0.01


PLUGIN = textwrap.dedent('''
    """A config plugin: registers a prior whose layer scale is fixed by its one option."""
    from dataclasses import dataclass

    from bmr_jax.bayes.priors import FlatPrior, register_prior


    @register_prior("effects_fixed_scale")
    @dataclass(frozen=True)
    class FixedScalePrior(FlatPrior):
        scale: float = 1.0
        name: str = "effects_fixed_scale"

        def __post_init__(self):
            object.__setattr__(self, "fixed_precision", 1.0 / self.scale**2)
''')


def test_a_plugins_prior_is_the_runs_prior(tmp_path, monkeypatch):
    """``plugins`` imports a module before the config is checked, so ``prior`` may name the
    prior it registers, and ``prior_options`` reach its constructor: the flat prior's fixed
    layer precision 1 / scale^2 = 1 / 0.25^2 = 16 is what the built network holds."""
    from bmr_jax.bayes.priors import PRIORS

    (tmp_path / "effects_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        _, setup = _setup("plugins=[effects_plugin]", "prior=effects_fixed_scale",
                          "prior_options={scale: 0.25}")  # fmt: skip
        assert type(setup.bnet.prior).__name__ == "FixedScalePrior"
        assert setup.bnet.prior.fixed_precision == pytest.approx(16.0)
    finally:
        PRIORS.unregister("effects_fixed_scale")
        sys.modules.pop("effects_plugin", None)


def test_data_name_loads_that_dataset():
    """``data.name``: the training images' mean and standard deviation, which standardise
    them, are the published ones of each dataset (MNIST 0.1307 and 0.3081, Fashion-MNIST
    0.2860 and 0.3530, of the pixel range), over 60,000 training and 10,000 test images."""
    for name, mean, std in (("mnist", 0.1307, 0.3081), ("fashion_mnist", 0.2860, 0.3530)):
        config = load_config(QUICKSTART, [*TINY, f"data.name={name}"])
        dataset = experiment.load_dataset(config)
        assert (len(dataset.train), len(dataset.test)) == (60_000, 10_000)
        assert float(dataset.channel_mean[0]) / 255 == pytest.approx(mean, abs=2e-4), name
        assert float(dataset.channel_std[0]) / 255 == pytest.approx(std, abs=2e-4), name


def test_the_local_estimator_draws_noise_per_datum():
    """``guide.estimator``: on a batch of 100 copies of one image the shared weight draw
    (``reparam``) gives every copy the same likelihood, so the batch's loss varies as one
    image's does; the local trick draws each copy's pre-activations afresh, so its standard
    deviation over keys is about sqrt(100) = 10 times smaller (measured 9.5). Both estimate the
    same ELBO: the means agree within 5 standard errors."""
    losses = {}
    for estimator in ("reparam", "local"):
        dataset, setup = _setup("method=flat_ff", f"guide.estimator={estimator}",
                                "guide.init_scale=0.2")  # fmt: skip
        trainer, gamma = setup.trainer, setup.bnet.full_gamma()
        params = trainer.params(trainer.init())
        x = jnp.repeat(jnp.asarray(dataset.train.images[:1]), 100, axis=0)
        y = jnp.repeat(jnp.asarray(dataset.train.labels[:1]), 100, axis=0)

        n = len(dataset.train)

        def loss(key, trainer=trainer, params=params, x=x, y=y, gamma=gamma, n=n):
            return trainer.elbo.loss(key, params, trainer.model, trainer.scaled_guide, x, y,
                                     gamma, n)  # fmt: skip

        keys = jax.random.split(jax.random.key(0), 200)
        losses[estimator] = np.asarray(jax.jit(jax.vmap(loss))(keys))
    shared, local = losses["reparam"], losses["local"]
    assert 6.0 < shared.std() / local.std() < 14.0
    assert abs(shared.mean() - local.mean()) < 5 * shared.std() / np.sqrt(len(shared))


def test_lr_and_optimizer_set_the_first_steps_size():
    """``train.lr`` and ``train.optimizer``: a first step moves each parameter by
    ``lr * m / sqrt(v)``, both moments bias-corrected: for Adam ``m = g`` and ``v = g^2``, a
    step of exactly ``lr``; for AdaBelief ``v`` is the squared surprise ``(g - m_1)^2`` with
    ``m_1 = 0.1 g`` before correction, so ``v = (0.9 g)^2`` and the step is ``lr / 0.9``. At
    lr 0.003 nearly every parameter moves by exactly that."""
    for optimizer, size in (("adam", 0.003), ("adabelief", 0.003 / 0.9)):
        _, setup = _setup("method=flat_ff", f"train.optimizer={optimizer}", "train.lr=0.003")
        state = setup.trainer.init()
        before = jax.device_get(state.params)
        after, _ = setup.trainer.step(jax.random.key(0), state, setup.bnet.full_gamma())
        moved = np.concatenate([np.abs(np.ravel(np.asarray(after.params[k]) - before[k]))
                                for k in before])  # fmt: skip
        assert np.mean(np.isclose(moved, size, rtol=1e-3)) > 0.98, optimizer
        assert moved.max() == pytest.approx(size, rel=1e-3), optimizer


def test_minibatches_epochs_cover_the_data_random_do_not(monkeypatch):
    """``train.minibatches``: with 200 training images (``data.validation`` holds out the
    rest) and batches of 50, the 4 steps of an epoch train on every image once under
    ``epochs``; under ``random`` each step draws 50 distinct images afresh, and 4 such draws
    covering all 200 has probability 200! / 50!^4 / C(200, 50)^4, about 1e-40 ... so some
    image repeats. The batches are read inside the compiled step."""
    seen, gather = [], train_module.gather

    def watched_gather(images, labels, order, i):
        jax.debug.callback(lambda index: seen.append(np.asarray(index)), order[i])
        return gather(images, labels, order, i)

    monkeypatch.setattr(train_module, "gather", watched_gather)
    for minibatches, expect_all in (("epochs", True), ("random", False)):
        seen.clear()
        _, setup = _setup("method=flat_ff", f"train.minibatches={minibatches}",
                          "data.validation=9800", "train.batch_size=50")  # fmt: skip
        setup.trainer.run_block(setup.trainer.init(), 4, key=jax.random.key(0), progress=False)
        jax.effects_barrier()
        assert [len(b) for b in seen] == [50] * 4 and all(len(set(b)) == 50 for b in seen)
        covered = np.unique(np.concatenate(seen))
        assert (len(covered) == 200) is expect_all, minibatches


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    """The wired pipeline on settings that differ from ``tiny_run``'s in every key below:
    4 blocks of 6 steps at batch 40; 3 posterior draws in chunks of 700 of the 2,000 test
    images, unshrunk, with the mean network; the first reduce after 2 warm-up blocks, none in
    the last (a refit block), by a target rule pruning half of every prunable layer at block
    3, the classifier included. Watched: each compiled step's batch, each predictive call's
    draws and chunk, the blocks the reduce step runs at, and the steps of each block."""
    overrides = ["train.blocks=4", "train.steps_per_block=6", "train.batch_size=40",
                 "eval.samples=3", "eval.chunk_size=700", "eval.shrink=false",
                 "eval.mean_network=true", "bmr.warmup_blocks=2", "bmr.refit_blocks=1",
                 "bmr.rule=target", "bmr.rule_options={schedule: {final: 0.5, begin: 2, end: 3}}",
                 "bmr.prune_classifier=true"]  # fmt: skip
    seen = {"batches": [], "predictive": [], "reduced_at": [], "steps": {}}
    gather, make_predictive, build_setup = (train_module.gather, evaluate.make_predictive,
                                            experiment.build_setup)  # fmt: skip

    def watched_gather(images, labels, order, i):
        x, y = gather(images, labels, order, i)
        seen["batches"].append(x.shape[0])  # once per compilation: the shape is static
        return x, y

    def watched_make_predictive(*args, point=False, **kwargs):
        predictive = make_predictive(*args, point=point, **kwargs)

        def called(params, gamma, keys, x, aux=None):
            seen["predictive"].append((point, keys.shape[0], x.shape[0]))
            return predictive(params, gamma, keys, x, aux)

        return called

    def watched_build_setup(config, dataset):
        setup = build_setup(config, dataset)
        between = setup.between

        def reduce(state, masks, gamma, block, key):
            seen["reduced_at"].append(block)
            return between(state, masks, gamma, block, key)

        setup.between = reduce
        return setup

    def on_event(name, block, step):
        if name == "step":
            seen["steps"][block] = seen["steps"].get(block, 0) + 1

    out = tmp_path_factory.mktemp("effects") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "gather", watched_gather)
        patch.setattr(evaluate, "make_predictive", watched_make_predictive)
        patch.setattr(experiment, "build_setup", watched_build_setup)
        config = load_config(QUICKSTART, [*TINY, *overrides])
        experiment.run_experiment(config, out, progress=False, log=lambda s: None,
                                  on_event=on_event)  # fmt: skip
    return seen, records(out)


def test_blocks_and_steps_per_block_are_what_runs(watched_run, tiny_run):
    """``train.blocks`` and ``train.steps_per_block``: 4 blocks of 6 SVI steps, each block's
    record at its global step (``tiny_run``: 3 of 20)."""
    seen, got = watched_run
    assert seen["steps"] == {1: 6, 2: 6, 3: 6, 4: 6}
    assert [r["step"] for r in got] == [6, 12, 18, 24]
    assert [r["step"] for r in records(tiny_run)] == [20, 40, 60]


def test_batch_size_is_the_batch_a_step_trains_on(watched_run):
    """``train.batch_size``: the compiled step gathers 40 images (the default is 120)."""
    seen, _ = watched_run
    assert seen["batches"] and set(seen["batches"]) == {40}


def test_eval_samples_and_chunk_size_are_what_the_predictive_gets(watched_run, tiny_run):
    """``eval.samples``, ``eval.chunk_size`` and ``eval.mean_network``: every evaluation
    averages 3 draws over chunks of 700, 700 and 600 of the 2,000 test images, and the mean
    network (``point``) one, over the same chunks; its metrics are recorded beside the
    Bayesian ones (``tiny_run``, without it, has none)."""
    seen, got = watched_run
    bayesian = [(False, 3, n) for n in (700, 700, 600)]
    mean = [(True, 1, n) for n in (700, 700, 600)]
    assert seen["predictive"] == (bayesian + mean) * 4
    assert all(r["mean_acc"] is not None and 0.0 <= r["mean_acc"] <= 1.0 for r in got)
    assert "mean_acc" not in records(tiny_run)[0]


def test_warmup_and_refit_blocks_bound_the_reduce_steps(watched_run, tiny_run):
    """``bmr.warmup_blocks`` (2) and ``bmr.refit_blocks`` (1) of 4: the reduce step runs
    before block 3 only; ``bmr.rule`` (target) with its ``bmr.rule_options`` prunes half of
    each prunable layer there, and block 4 keeps those masks. The defaults (warm-up 1, no
    refit, spike-and-slab) reduce before blocks 2 and 3."""
    seen, got = watched_run
    assert seen["reduced_at"] == [3]
    assert [r["pruned_fraction"] for r in got][:2] == [0.0, 0.0]
    for layer, fraction in got[2]["pruned_by_layer"].items():
        assert fraction == pytest.approx(0.5, abs=0.01), layer
    assert got[3]["pruned_by_layer"] == got[2]["pruned_by_layer"]
    assert records(tiny_run)[1]["pruned_fraction"] > 0  # reduced before block 2


def test_prune_classifier_lets_the_rule_prune_the_head(watched_run, tiny_run):
    """``bmr.prune_classifier``: the target rule prunes half of the classifier's weights too;
    by default the head keeps every weight."""
    _, got = watched_run
    assert got[2]["pruned_by_layer"]["head"] == pytest.approx(0.5, abs=0.01)
    assert records(tiny_run)[-1]["pruned_by_layer"]["head"] == 0.0


def test_a_plugin_in_the_current_directory_is_found_by_the_command(tmp_path):
    """``plugins`` names a module saved where ``bmr-jax`` runs: the installed script's
    import path starts at its own folder, not the current one, yet the plugin is found (the
    prior it registers is a known name) and the run starts."""
    import subprocess

    (tmp_path / "effects_plugin_here.py").write_text(PLUGIN.replace("effects_fixed_scale",
                                                                    "effects_here"))  # fmt: skip
    script = Path(sys.executable).parent / "bmr-jax"
    done = subprocess.run([str(script), "run", QUICKSTART, *TINY, "train.blocks=1",
                           "train.steps_per_block=2", "eval.samples=1",
                           "plugins=[effects_plugin_here]", "prior=effects_here",
                           "prior_options={scale: 0.5}", "--out", "run", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prior: effects_here" in (tmp_path / "run" / "config.yaml").read_text()
