"""`bmr-jax grid`: expansion, validation before running, skipping and continuing."""

from __future__ import annotations

import json

import pytest

from bmr_jax.cli import main
from bmr_jax.runs.config import ConfigError
from bmr_jax.runs.experiment import run_experiment
from bmr_jax.runs.grid import load_grid
from tests.runs import QUICKSTART, REPO, Crash, at

TINY = ["data.name=mnist_mini", "net.name=lenet_300_100", "net.preset=small", "train.blocks=1",
        "train.steps_per_block=20", "eval.samples=2"]  # fmt: skip


def _grid(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_grid_expands_configs_times_product(tmp_path):
    path = _grid(
        tmp_path,
        f"""
configs: [{QUICKSTART}]
product: {{seed: [1, 2], net.preset: [small]}}
overrides: [train.blocks=2]
out: out
""",
    )
    runs = load_grid(path)
    assert [r.name for r in runs] == [
        "configs/quickstart,seed=1,net.preset=small", "configs/quickstart,seed=2,net.preset=small"
    ]  # fmt: skip
    assert [r.config.seed for r in runs] == [1, 2]
    assert all(r.config.train.blocks == 2 and r.config.net.preset == "small" for r in runs)
    assert runs[0].out == tmp_path / "out" / runs[0].name


def test_grid_runs_skips_finished_and_continues_unfinished(tmp_path, capsys):
    path = _grid(tmp_path, f"configs: [{QUICKSTART}]\nproduct: {{seed: [1, 2]}}\nout: out\n")
    # start run 2 and interrupt it after its first block of two
    runs = load_grid(path, [*TINY, "train.blocks=2"])
    with pytest.raises(Crash):
        run_experiment(runs[1].config, runs[1].out, progress=False, log=lambda s: None,
                       on_event=at(("checkpoint", 1, 0), "crash"))  # fmt: skip
    assert main(["grid", str(path), *TINY, "train.blocks=2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "resuming after block 1/2" in out and "2 runs completed, 0 already finished" in out
    for run in runs:
        records = [json.loads(x) for x in (run.out / "metrics.jsonl").read_text().splitlines()]
        assert [r["block"] for r in records] == [1, 2]
    assert main(["grid", str(path), *TINY, "train.blocks=2", "--quiet"]) == 0
    assert "0 runs completed, 2 already finished" in capsys.readouterr().out


def test_bad_grids_fail_before_running(tmp_path, capsys):
    bad = _grid(tmp_path, f"configs: [{QUICKSTART}]\nproduct: {{train.blocks: [1, 0]}}\n")
    assert main(["grid", str(bad)]) == 2
    assert "train.blocks: must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="unknown grid key 'config'"):
        load_grid(_grid(tmp_path, "config: x.yaml\n"))
    with pytest.raises(ConfigError, match="matches no file"):
        load_grid(_grid(tmp_path, "configs: [nothing-*.yaml]\n"))
    # issue 38: an empty list made a grid of no runs that exited 0
    empty = _grid(tmp_path, f"configs: [{QUICKSTART}]\nproduct: {{seed: []}}\n")
    assert main(["grid", str(empty)]) == 2
    assert "product: seed has no values" in capsys.readouterr().err


def test_shipped_grids_expand():
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        runs = load_grid(path)
        assert runs, path


def test_grid_variants_name_their_runs_and_out_moves_them(tmp_path, capsys):
    path = _grid(
        tmp_path,
        f"""
configs: [{QUICKSTART}]
product: {{seed: [1, 2]}}
variants:
  ours: []
  paper_start: [guide.init=paper, train.kl=monte_carlo]
out: out
""",
    )
    runs = load_grid(path, out=tmp_path / "elsewhere")
    assert [r.name for r in runs] == [
        "configs/quickstart,variant=ours,seed=1", "configs/quickstart,variant=ours,seed=2",
        "configs/quickstart,variant=paper_start,seed=1",
        "configs/quickstart,variant=paper_start,seed=2",
    ]  # fmt: skip
    assert [(r.config.guide.init, r.config.train.kl) for r in runs] == \
        [("network", "analytic")] * 2 + [("paper", "monte_carlo")] * 2  # fmt: skip
    assert all(r.out == tmp_path / "elsewhere" / r.name for r in runs)
    for text, message in (
        ("variants: [a]", "variants must map names"),
        ("variants: {a b: []}", "variant name 'a b'"),
        ("variants: {a: [guide.init=uniform]}", "guide.init: unknown value"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_grid(_grid(tmp_path, f"configs: [{QUICKSTART}]\n{text}\n"))
    assert main(["grid", str(_grid(tmp_path, f"configs: [{QUICKSTART}]\nvariants: [1]\n"))]) == 2
    assert "variants must map names" in capsys.readouterr().err
