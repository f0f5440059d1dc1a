"""`bmr-jax run`: the run-folder contract, extending a finished run, refusing another config's
folder, and config errors (real data, few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmr_jax.cli import main
from bmr_jax.runs.config import ConfigError, load_config
from bmr_jax.runs.experiment import run_experiment
from tests.runs import QUICKSTART, REPO, TINY, Crash, assert_same_run, at, records


@pytest.fixture
def uninterrupted(tiny_run):
    return tiny_run


def test_run_writes_the_contract(uninterrupted):
    files = {p.name for p in uninterrupted.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", ".bmr-jax-run"} <= files
    # the final state stays (so that train.blocks can be raised), nothing older
    assert [p.name for p in (uninterrupted / "checkpoints").iterdir()] == ["block-000003.npz"]
    lines = (uninterrupted / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["block"] for r in rows] == [1, 2, 3]
    assert [r["step"] for r in rows] == [20, 40, 60]
    for key in ("block", "step", "acc", "nll", "ece", "pruned_fraction", "seconds"):
        assert all(key in r for r in rows)
    assert rows[0]["pruned_fraction"] == 0.0 < rows[1]["pruned_fraction"]  # warm-up, then BMR
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["acc"] == rows[-1]["acc"]
    resolved = load_config(uninterrupted / "config.yaml")  # config.yaml is complete and valid
    assert resolved.train.blocks == 3 and resolved.seed == 137 and resolved.method == "bmr_ss"


def test_posterior_npz_is_scale_gamma_z_at_the_guide_median(uninterrupted):
    """posterior.npz holds W = scale * gamma * Z per layer: zero exactly where pruned (gamma
    1e-12 times |Z| < 10 is below 1e-11) and, where kept, the guide's loc (read from the final
    checkpoint) times one scale per layer."""
    from bmr_jax.export.from_run import restore_run

    run = restore_run(uninterrupted)
    params = run.setup.trainer.params(run.state.train)
    with np.load(uninterrupted / "posterior.npz") as saved:
        layers = [str(x) for x in saved["layers"]]
        assert layers == ["hidden.0", "hidden.1", "head"]  # LeNet-300-100, in forward order
        for layer in layers:
            w, mask = saved[f"weight/{layer}"], saved[f"mask/{layer}"]
            assert w.shape == mask.shape
            assert np.all(np.abs(w[~mask]) < 1e-11)
            assert np.count_nonzero(w[mask]) == mask.sum()
            ratio = w[mask] / np.asarray(params[f"{layer}/z/loc"])[mask]
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # one scale per layer


def test_extending_a_finished_run_continues_it(uninterrupted, tmp_path, capsys):
    out = tmp_path / "short"
    two = [*TINY, "train.blocks=2"]
    assert main(["run", QUICKSTART, *two, "--out", str(out), "--quiet"]) == 0
    assert main(["run", QUICKSTART, *TINY, "--out", str(out), "--quiet"]) == 0
    assert "extending the finished run to 3 blocks" in capsys.readouterr().out
    assert_same_run(out, uninterrupted)
    assert load_config(out / "config.yaml").train.blocks == 3


def test_another_config_is_refused_naming_the_keys(tmp_path, capsys):
    out = tmp_path / "run"
    config = load_config(QUICKSTART, TINY)
    with pytest.raises(Crash):
        run_experiment(config, out, progress=False, log=lambda s: None,
                       on_event=at(("checkpoint", 1, 0), "crash"))  # fmt: skip
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    other = [*TINY, "seed=5", "train.lr=0.003"]
    assert main(["run", QUICKSTART, *other, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "config differs in seed, train.lr;" in err and "--force to delete" in err
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before
    assert main(["run", QUICKSTART, *TINY, "train.blocks=4", "train.steps_per_block=30",
                 "--out", str(out), "--quiet"]) == 2  # fmt: skip
    assert "differs in train.blocks, train.steps_per_block;" in capsys.readouterr().err
    # fewer blocks is not an extension
    assert main(["run", QUICKSTART, *TINY, "train.blocks=2", "--out", str(out), "--quiet"]) == 2
    assert "holds a run of more blocks than train.blocks=2" in capsys.readouterr().err
    assert main(["run", QUICKSTART, *other, "--out", str(out), "--quiet", "--force"]) == 0
    assert load_config(out / "config.yaml").seed == 5
    assert [r["block"] for r in records(out)] == [1, 2, 3]


def test_folders_that_are_not_ours(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["run", QUICKSTART, *TINY, "--out", str(foreign), "--force"]) == 2
    err = capsys.readouterr().err
    assert "not a bmr-jax run folder" in err and err.count("\n") == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # nothing written


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
        ("bmr.rule=greedy", "bmr.rule: unknown value 'greedy'; allowed: spike_and_slab, "
                            "evidence, target, unit_spike_and_slab"),
        ("bmr.rule_options={tau: 1}", "bmr.rule_options: spike_and_slab: "),
        ("bmr.rule_options=[1]", "bmr.rule_options: expected a mapping"),
        ("train.rollback_factor=1", "train.rollback_factor: must be < 1, got 1.0"),
        # issue 38: an overflowing seed was a traceback after the folder was written
        ("seed=9223372036854775808", "seed: must be < 4294967296, got 9223372036854775808"),
        ("seed=-1", "seed: must be >= 0, got -1"),
        ("train.steps_per_block=1000000000000000", "is more than the 2^31 - 1 a run can count"),
        (
            "bmr.inclusion_rate=weights",
            "bmr.inclusion_rate: unknown value 'weights'; allowed: layer, alive",
        ),
    ],
)  # fmt: skip
def test_config_errors_exit_2_with_one_line(override, message, capsys, tmp_path):
    out = tmp_path / "never"
    assert main(["run", QUICKSTART, override, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_config_files_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["run", str(empty), "--out", str(tmp_path / "y")]) == 2
    assert "the config is empty" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    loop = tmp_path / "loop.yaml"
    loop.write_text("defaults: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(loop)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_a_folder_written_before_a_key_was_added_still_resumes(tmp_path):
    from bmr_jax.runs.config import differing_keys, dump_config

    config = load_config(QUICKSTART, TINY)
    old_yaml = dump_config(config).split("bmr:")[0]  # as written before the bmr section existed
    assert differing_keys(config, old_yaml) == []
    other = load_config(QUICKSTART, [*TINY, "seed=2", "bmr.warmup_blocks=2"])
    assert differing_keys(other, old_yaml) == ["seed", "bmr.warmup_blocks"]
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / ".bmr-jax-run").write_text("bmr-jax run folder\n")
    (folder / "config.yaml").write_text(old_yaml)
    with pytest.raises(Crash):  # accepted: it runs
        run_experiment(config, folder, progress=False, log=lambda s: None,
                       on_event=at(("step", 1, 1), "crash"))  # fmt: skip


def test_defaults_are_merged_not_copied():
    config = load_config(QUICKSTART)
    assert config.train.batch_size == 120  # from base.yaml
    assert config.train.blocks == 4  # quickstart's own value wins


FRONTIER = "mnist_frontier"  # issue 14's grid: our choices, 200 epochs
STRUCTURED = ("mnist_structured", "fashion_mnist_structured")  # issue 36's grids
SPARSE_VD = "mnist_sparse_vd"  # issue 37: Sparse VD as its paper runs it, and one at a time


def test_every_shipped_config_is_valid():
    files = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                   if p.parent.name not in (FRONTIER, *STRUCTURED, SPARSE_VD))  # fmt: skip
    assert len(files) == 1 + 1 + 1 + 60 + 2  # base, reference, quickstart, the grid, anchors
    for path in files:
        config = load_config(path)
        if path.parent.name != "configs":
            assert config.train.blocks == 50 and config.train.steps_per_block == 500
            assert config.data.name == path.parent.name and config.net.preset == "paper"


def test_every_frontier_config_has_the_same_budget():
    """Issue 14: every method on a network's frontier gets the same budget: 200 epochs of
    batch 100 on LeNet-300-100, 10 on LeNet-5-Caffe."""
    for net, blocks in (("lenet_300_100", 200), ("lenet5_caffe", 10)):
        files = sorted((REPO / "configs" / FRONTIER).glob(f"{net}-*.yaml"))
        # Sparse VD, BMR-S&S x 3, BMR target x 4, GMP x 4, IVON + BMR (S&S and 4 targets)
        assert len(files) == 1 + 3 + 4 + 4 + 5
        for path in files:
            config = load_config(path)
            train = config.train
            assert (train.blocks, train.steps_per_block, train.batch_size) == (blocks, 600, 100)
            assert (config.data.name, config.net.name, config.net.preset) == (
                "mnist", net, "paper")


def test_the_sparse_vd_variants_have_the_frontier_budget_and_differ_in_one_choice():
    """Issue 37: ours (with the deterministic metrics), the paper code's four choices at once,
    and each alone, all on the frontier's LeNet-300-100 budget."""
    def choices(config):
        return {"clip": config.guide.sparse_vd_clip, "variance": config.guide.sparse_vd_variance,
                "optimizer": (config.train.optimizer, config.train.lr_schedule)}

    ours = {"clip": "block", "variance": "sigma", "optimizer": ("adabelief", "constant")}
    paper = {"clip": "step", "variance": "alpha", "optimizer": ("adam", "linear_second_half")}
    expected = {"sparse_vd": ours, "sparse_vd-reference": paper,
                **{f"sparse_vd-{name}": {**ours, key: paper[key]} for name, key in (
                    ("clip_step", "clip"), ("alpha_variance", "variance"),
                    ("adam_decay", "optimizer"))}}  # fmt: skip
    files = sorted((REPO / "configs" / SPARSE_VD).glob("*.yaml"))
    assert sorted(p.stem.removeprefix("lenet_300_100-") for p in files) == sorted(expected)
    for path in files:
        config = load_config(path)
        train = config.train
        assert (train.blocks, train.steps_per_block, train.batch_size) == (200, 600, 100)
        assert config.method == "sparse_vd" and config.eval.mean_network
        assert choices(config) == expected[path.stem.removeprefix("lenet_300_100-")]


def test_the_structured_frontier_has_the_frontier_budget():
    """Issue 36: every structured method on MNIST at its network's frontier budget (and the
    targets on its schedule), every transformer run at the same CPU scale."""
    for net, blocks, (begin, end, refit) in (("lenet_300_100", 200, (6, 150, 50)),
                                             ("lenet5_caffe", 10, (2, 7, 3))):  # fmt: skip
        files = sorted((REPO / "configs" / "mnist_structured").glob(f"{net}-*.yaml"))
        assert len(files) == 8  # group S&S and 2 targets, multipliers, BMRS, units, L1 x 2
        for path in files:
            config = load_config(path)
            train, bmr = config.train, config.bmr
            assert (train.blocks, train.steps_per_block, train.batch_size) == (blocks, 600, 100)
            assert config.net.name == net and bmr.refit_blocks == refit
            if bmr.rule_options:
                schedule = bmr.rule_options["schedule"]
                assert (schedule["begin"], schedule["end"]) == (begin, end)
    for path in sorted((REPO / "configs" / "fashion_mnist_structured").glob("*.yaml")):
        config = load_config(path)
        train, net = config.train, config.net
        if net.name == "lenet5":  # the paper's network on the reference schedule
            assert (train.blocks, train.steps_per_block, net.preset) == (50, 500, "paper")
        else:  # the transformers at CPU scale
            assert (train.blocks, train.steps_per_block, net.preset) == (10, 100, "small")


def test_default_run_folder_keeps_the_dataset():
    from pathlib import Path

    from bmr_jax.cli import default_run_folder

    assert default_run_folder("configs/fashion_mnist/mlp-bmr_ss.yaml") == Path(
        "runs/fashion_mnist/mlp-bmr_ss"
    )
    assert default_run_folder("configs/quickstart.yaml") == Path("runs/quickstart")
    assert default_run_folder("/tmp/elsewhere/my.yaml") == Path("runs/my")
    # overrides name the folder as grid runs are named, so a sweep gets a folder per run
    assert default_run_folder(
        "configs/fashion_mnist/mlp-bmr_ss.yaml", ["seed=138", "train.blocks=3"]
    ) == Path("runs/fashion_mnist/mlp-bmr_ss,seed=138,train.blocks=3")
    assert default_run_folder("/tmp/elsewhere/my.yaml", ["data.name=a/b"]) == Path(
        "runs/my,data.name=a%2Fb"
    )


def test_a_data_folder_that_does_not_exist_is_one_line_and_writes_nothing(tmp_path, capsys,
                                                                          monkeypatch):
    """Issue 38: ``--data-dir /nonexistent`` made that folder and tried to download into it,
    and a failed start left a claimed run folder that refused the corrected command."""
    missing, out = tmp_path / "nonexistent", tmp_path / "run"
    config = str(REPO / "configs" / "fashion_mnist" / "mlp-bmr_ss.yaml")
    with pytest.raises(SystemExit) as info:  # argparse refuses it, before anything runs
        main(["run", config, "--data-dir", str(missing), "--out", str(out), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --data-dir: {missing}: the data folder does not exist" in err
    assert err.count("\n") == 1 and not missing.exists() and not out.exists()
    monkeypatch.setenv("BMR_JAX_DATA", str(missing))
    assert main(["run", config, "--out", str(out), "--quiet"]) == 2
    assert "the data folder (BMR_JAX_DATA) does not exist" in capsys.readouterr().err
    assert not missing.exists() and not out.exists()


def test_a_reference_start_says_why_nothing_is_pruned_yet(tmp_path):
    """Issue 38: a reference-mode run shows 'pruned 0.000' for its first blocks; its start
    says why, where the user looks. A run with our start does not."""
    lines = {}
    for init in ("paper", "network"):
        config = load_config(QUICKSTART, [*TINY, "train.blocks=1", f"guide.init={init}"])
        out = []
        run_experiment(config, tmp_path / init, progress=False, log=out.append)
        lines[init] = "\n".join(out)
    assert "the reference start (guide.init: paper) leaves few weights prunable" in lines["paper"]
    assert "reference start" not in lines["network"]


def test_a_run_with_a_decaying_rate_is_not_extended(tmp_path, capsys):
    """``train.lr_schedule: linear_second_half`` spreads the decay over ``train.blocks``:
    more blocks would change the rate of steps already taken, so the extension is refused
    (exit 2, one line); a constant rate extends as before."""
    out = str(tmp_path / "run")
    tiny = [*TINY, "train.blocks=1", "train.steps_per_block=4", "eval.samples=1",
            "train.lr_schedule=linear_second_half", "train.optimizer=adam"]  # fmt: skip
    assert main(["run", QUICKSTART, *tiny, "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", QUICKSTART, *tiny, "train.blocks=2", "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot change train.blocks" in err
    assert "linear_second_half" in err
