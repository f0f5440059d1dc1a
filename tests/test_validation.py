"""Bad input at the command line: each class exits 2 with one line naming the problem and
writes nothing outside the run folder (README's table of bad inputs points here); and a fuzz of
the config loader that may only ever raise our ConfigError."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmr_jax.cli import main
from bmr_jax.runs.config import ConfigError, from_dict, load_config, parse_override
from tests.runs import QUICKSTART

TINY = ["data.name=mnist", "net.preset=small", "train.blocks=1", "train.steps_per_block=2",
        "eval.samples=1"]  # fmt: skip


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _mnist_copy(data_dir, tmp_path, damage):
    folder = tmp_path / "data"
    shutil.copytree(data_dir / "mnist", folder / "mnist")
    damage(folder / "mnist" / "t10k-labels-idx1-ubyte.gz")
    return folder


def _flip_a_byte(path):
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_flip_a_byte, "differs from the published"),
        (lambda p: p.write_bytes(p.read_bytes()[:500]), "differs from the published"),
        (lambda p: p.unlink(), "file is missing"),
    ],
    ids=["corrupt", "truncated", "missing"],
)
def test_bad_data_files_exit_2_and_write_only_in_the_run_folder(
    damage, message, data_dir, tmp_path, capsys, monkeypatch
):
    folder = _mnist_copy(data_dir, tmp_path, damage)
    monkeypatch.setenv("BMR_JAX_OFFLINE", "1")
    before = _files(tmp_path)
    out = tmp_path / "run"
    code = main(["run", QUICKSTART, *TINY, "--out", str(out), "--data-dir",
                 str(folder)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "t10k-labels-idx1-ubyte.gz" in err
    assert err.count("\n") == 1
    assert {p for p in _files(tmp_path) - before if out not in p.parents} == set()


def test_unknown_names_at_every_level(capsys, tmp_path):
    names = [("method=prune", "method"), ("net.name=resnet", "net.name"),
             ("data.name=svhn", "data.name"), ("net.preset=huge", "net.preset")]  # fmt: skip
    for override, named in names:
        assert main(["run", QUICKSTART, override, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bmr-jax: error: {named}: unknown value") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_unknown_prior_and_shape_mismatch_through_the_api():
    import jax.numpy as jnp
    from flax import nnx

    from bmr_jax import nets
    from bmr_jax.bayes import priors
    from bmr_jax.errors import ShapeMismatchError, UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown prior 'laplace'; known: flat, horseshoe"):
        priors.create_prior("laplace")
    net = nets.create_net("mlp", 10, (28, 28, 1), "small", rngs=nnx.Rngs(0))
    with pytest.raises(ShapeMismatchError) as info:
        net(jnp.zeros((2, 32, 32, 3)))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m: m.TrainSettings(steps_per_block=-1), "train.steps_per_block: must be >= 1"),
        (lambda m: m.TrainSettings(lr=0), "train.lr: must be > 0, got 0.0"),
        (lambda m: m.TrainSettings(blocks="3"), "train.blocks: expected an integer, got '3'"),
        (lambda m: m.TrainSettings(on_nonfinite="retry"), "train.on_nonfinite: unknown value"),
        (lambda m: m.EvalSettings(samples=0), "eval.samples: must be >= 1, got 0"),
        (lambda m: m.BmrSettings(rule="magnitude"), "bmr.rule: unknown value 'magnitude'"),
        (lambda m: m.configured("flat_ff", m.BmrSettings(rule="evidence")),
         "bmr.rule: method 'flat_ff' has no decision rule"),
        (lambda m: m.configured("bmr_ss", m.BmrSettings(rule_options={"a": 1})),
         "bmr.rule_options: spike_and_slab: "),
        (lambda m: m.configured("bmr_ss", prior_options={"weight_wise": True}),
         "prior_options: flat: "),
        (lambda m: m.configured("flat_ff", prior="horseshoe", prior_options={"tau": 1}),
         "prior_options: horseshoe: "),
        # issue 38: the prior registry's own door, and the step counter's range
        (lambda m: __import__("bmr_jax.bayes.priors").bayes.priors.create_prior(
            "horseshoe", nonsense=1), "prior_options: horseshoe: "),
        (lambda m: m.TrainSettings(steps_per_block=10**15),
         "train.blocks x train.steps_per_block: 50 x 1000000000000000 steps is more than"),
    ],
)  # fmt: skip
def test_the_python_api_validates_as_the_config_does(make, message):
    """``methods.build`` and ``methods.run`` take the settings sections, which refuse what the
    config file refuses, with the same one-line error (no run with ``loss nan``)."""
    from bmr_jax import methods
    from bmr_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        make(methods)
    assert "\n" not in str(info.value)


def test_build_and_run_refuse_what_cannot_run():
    from bmr_jax import data, methods
    from bmr_jax.errors import ConfigError, UnknownNameError

    ds = data.load("mnist_mini")
    with pytest.raises(UnknownNameError, match="unknown method 'sgd'"):
        methods.build("sgd", ds)
    with pytest.raises(ConfigError, match="train.batch_size: 20000 is more than the 10000"):
        methods.build("flat_ff", ds, net="mlp", train=methods.TrainSettings(batch_size=20000))
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        methods.build("flat_ff", ds, net="mlp", seed=1.5)
    for method in ("bmr_units", "bmr_rhs", "sparse_vd", "flat_ff"):  # no weight-wise masks
        with pytest.raises(ConfigError, match=f"bmr.prune_classifier: method '{method}' has"):
            methods.build(method, ds, net="mlp", bmr=methods.BmrSettings(prune_classifier=True))
    setup = methods.build("flat_ff", ds, net="mlp", preset="small")
    with pytest.raises(ConfigError, match="evaluation must be EvalSettings"):
        methods.run(setup, ds, evaluation={"samples": 2})


# ------------------------------------------------------------------ fuzz of the config loader

SCHEMA_KEYS = ["seed", "method", "data", "net", "train", "eval", "bmr", "name", "preset",
               "blocks", "steps_per_block", "batch_size", "lr", "samples", "chunk_size", "every",
               "inclusion_rate", "on_nonfinite", "rollback_factor", "max_rollbacks",
               "keep_checkpoints", "defaults", "warmup_blocks", "rule", "rule_options",
               "data_parallel", "prior", "prune_classifier"]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["mlp", "lenet5", "bmr_ss", "paper", "layer", "stop"]),
)  # fmt: skip
keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=6))
def test_from_dict_only_raises_config_errors(values):
    try:
        from_dict(values)
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_overrides_only_raise_config_errors(text):
    try:
        load_config(None, [text])
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(st.text(max_size=80), values.map(lambda v: yaml.safe_dump(v))))
def test_config_files_only_raise_config_errors(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e)


def test_parse_override_examples():
    assert parse_override("train.blocks=5") == {"train": {"blocks": 5}}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("blocks")


@pytest.mark.parametrize("written, number", [("1e-3", 0.001), ("1E10", 1e10), ("2.5E-4", 2.5e-4),
                                              ("1.0e-3", 0.001), ("5e0", 5.0)])  # fmt: skip
def test_numbers_are_read_as_people_write_them(tmp_path, written, number):
    """Issue 38: YAML 1.1's float pattern needs a dot, so ``1e-3`` was the string '1e-3' and
    refused as a learning rate; in an override, in a config file and in a grid's product it
    is the number (YAML 1.2's and JSON's reading)."""
    assert parse_override(f"train.lr={written}") == {"train": {"lr": number}}
    assert parse_override(f"x=-{written}") == {"x": -number}
    path = tmp_path / "c.yaml"
    path.write_text(f"defaults: [{QUICKSTART}]\ntrain: {{lr: {written}}}\n")
    assert load_config(path).train.lr == pytest.approx(number)
    assert load_config(QUICKSTART, [f"train.lr={written}"]).train.lr == pytest.approx(number)
    grid = tmp_path / "g.yaml"
    grid.write_text(f"configs: [{QUICKSTART}]\nproduct: {{train.lr: [{written}]}}\n")
    from bmr_jax.runs.grid import load_grid

    assert [run.config.train.lr for run in load_grid(grid)] == [pytest.approx(number)]


def test_what_is_not_a_number_stays_refused():
    for text in ("1e", "e5", "1e-3x"):
        with pytest.raises(ConfigError, match=f"train.lr: expected a number, got '{text}'"):
            load_config(QUICKSTART, [f"train.lr={text}"])
