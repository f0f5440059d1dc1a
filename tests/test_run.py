"""`bmr-jax run`: run folders, interruption and resume, config errors (real data, few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmr_jax.cli import main
from bmr_jax.config import ConfigError, load_config
from bmr_jax.experiment import run_experiment

TINY = [
    "method=bmr_ss",
    "data.name=mnist_mini",
    "net.preset=small",
    "train.blocks=3",
    "train.steps_per_block=40",
    "eval.samples=2",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(["run", "configs/quickstart.yaml", *TINY, "--out", str(out), "--quiet"]) == 0
    return out


TIMING = {"train_seconds", "reduce_seconds", "eval_seconds", "seconds"}


def assert_same_run(a, b):
    """Two run folders hold bit-identical results (timings aside)."""
    ra = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in ra] == [
        {k: v for k, v in r.items() if k not in TIMING} for r in rb
    ]
    with np.load(a / "posterior.npz") as pa, np.load(b / "posterior.npz") as pb:
        assert sorted(pa) == sorted(pb)
        for key in pa:
            np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def test_run_writes_the_contract(uninterrupted):
    files = {p.name for p in uninterrupted.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", ".bmr-jax-run"} <= files
    assert "checkpoints" not in files  # removed once the run is complete
    lines = (uninterrupted / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["block"] for r in records] == [1, 2, 3]
    for key in ("block", "step", "acc", "nll", "ece", "pruned_fraction", "seconds"):
        assert all(key in r for r in records)
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["steps"] == 120 and summary["acc"] == records[-1]["acc"]
    resolved = load_config(uninterrupted / "config.yaml")  # config.yaml is complete and valid
    assert resolved.train.blocks == 3 and resolved.seed == 137 and resolved.method == "bmr_ss"


def test_interrupted_run_resumes_to_the_same_result(uninterrupted, tmp_path, capsys):
    config = load_config("configs/quickstart.yaml", TINY)
    out = tmp_path / "interrupted"
    assert run_experiment(config, out, progress=False, stop_after=1) is None
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["block-000001.npz"]
    assert not (out / "summary.json").exists()
    # a line written after the checkpoint (a crash between the two) is dropped on resume
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"block": 2, "acc": -1}) + "\n")
    assert main(["run", "configs/quickstart.yaml", *TINY, "--out", str(out), "--quiet"]) == 0
    assert "resuming after block 1/3" in capsys.readouterr().out
    resumed = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["block"] for r in resumed] == [1, 2, 3]
    assert_same_run(out, uninterrupted)
    # a finished run is not run again
    assert main(["run", "configs/quickstart.yaml", *TINY, "--out", str(out), "--quiet"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_evaluating_every_other_block_leaves_training_alone(uninterrupted, tmp_path):
    out = tmp_path / "every"
    assert main(["run", "configs/quickstart.yaml", *TINY, "eval.every=2", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    sparse = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    full = [json.loads(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["acc"] is None for r in sparse] == [True, False, False]  # block 2, and the last
    for a, b in zip(sparse, full, strict=True):
        for key in ("loss", "pruned_fraction") + (("acc", "nll", "ece") if a["acc"] else ()):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
    assert json.loads((out / "summary.json").read_text())["acc"] == full[-1]["acc"]


def test_warm_up_blocks_delay_the_first_reduce(uninterrupted, tmp_path):
    out = tmp_path / "warm"
    assert main(["run", "configs/quickstart.yaml", *TINY, "bmr.warmup_blocks=2", "--out",
                 str(out), "--quiet"]) == 0  # fmt: skip
    pruned = [
        json.loads(x)["pruned_fraction"] for x in (out / "metrics.jsonl").read_text().splitlines()
    ]
    full = [
        json.loads(x)["pruned_fraction"]
        for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()
    ]
    assert pruned[:2] == [0.0, 0.0] and pruned[2] > 0  # the first reduce starts block 3
    assert full[0] == 0.0 and full[1] > 0  # the default: one block of warm-up (METHOD.md 4.5)


def test_folders_that_are_not_ours_or_hold_another_run(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["run", "configs/quickstart.yaml", *TINY, "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "not a bmr-jax run folder" in err and err.count("\n") == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # nothing written
    other = tmp_path / "other"
    config = load_config("configs/quickstart.yaml", TINY)
    run_experiment(config, other, progress=False, stop_after=1)
    assert main(["run", "configs/quickstart.yaml", *TINY, "seed=1", "--out", str(other)]) == 2
    assert "holds a run of a different config" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.blocks=0", "train.blocks: must be >= 1, got 0"),
        ("train.block=3", "train.block: unknown key; allowed: train.blocks"),
        ("net.name=resnet", "net.name: unknown value 'resnet'; allowed: mlp, lenet5"),
        ("method=sgd", "method: unknown value 'sgd'; allowed: flat_map"),
        ("data.name=imagenet", "data.name: unknown value 'imagenet'"),
        ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
        ("seed=1.5", "seed: expected an integer, got 1.5"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("blocks", "override 'blocks': expected key=value"),
        (
            "bmr.inclusion_rate=weights",
            "bmr.inclusion_rate: unknown value 'weights'; allowed: layer, alive",
        ),
    ],
)
def test_config_errors_exit_2_with_one_line(override, message, capsys, tmp_path):
    out = tmp_path / "never"
    assert main(["run", "configs/quickstart.yaml", override, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()
    with pytest.raises(ConfigError):
        load_config("configs/quickstart.yaml", [override])


def test_config_files_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    loop = tmp_path / "loop.yaml"
    loop.write_text("defaults: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(loop)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_a_folder_written_before_a_key_was_added_still_resumes(tmp_path):
    from bmr_jax import methods
    from bmr_jax.config import dump_config, same_config

    config = load_config("configs/quickstart.yaml", TINY)
    old_yaml = dump_config(config).split("bmr:")[0]  # as written before the bmr section existed
    assert same_config(config, old_yaml)
    assert not same_config(load_config("configs/quickstart.yaml", [*TINY, "seed=2"]), old_yaml)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / ".bmr-jax-run").write_text("bmr-jax run folder\n")
    (folder / "config.yaml").write_text(old_yaml)
    assert run_experiment(config, folder, progress=False, stop_after=1) is None  # accepted
    rule = methods.configured("bmr_ss", inclusion_rate="alive").rule
    assert rule.rate_over == "alive" and methods.METHODS.get("bmr_ss").rule.rate_over == "layer"


def test_defaults_are_merged_not_copied():
    config = load_config("configs/quickstart.yaml")
    assert config.train.batch_size == 120  # from base.yaml
    assert config.train.blocks == 4  # quickstart's own value wins


def test_every_shipped_config_is_valid():
    from pathlib import Path

    files = sorted(Path("configs").rglob("*.yaml"))
    assert len(files) == 1 + 1 + 60 + 2  # base, quickstart, the grid, the MNIST anchors
    for path in files:
        config = load_config(path)
        if path.parent.name != "configs":
            assert config.train.blocks == 50 and config.train.steps_per_block == 500
            assert config.data.name == path.parent.name and config.net.preset == "paper"


def test_default_run_folder_keeps_the_dataset():
    from pathlib import Path

    from bmr_jax.cli import default_run_folder

    assert default_run_folder("configs/fashion_mnist/mlp-bmr_ss.yaml") == Path(
        "runs/fashion_mnist/mlp-bmr_ss"
    )
    assert default_run_folder("configs/quickstart.yaml") == Path("runs/quickstart")
    assert default_run_folder("/tmp/elsewhere/my.yaml") == Path("runs/my")
