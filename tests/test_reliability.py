"""Interruptions: a run stopped at any moment -- a crash (kill -9) or SIGINT/SIGTERM during
training, during evaluation, at the between-blocks step, between a metrics line and its
checkpoint, during a checkpoint write -- resumes to metrics and a posterior.npz bit-identical
to an uninterrupted run's. The points are hit exactly through the loop's event hook (no sleeps).
NaN/inf stops a run naming the block and step, or rolls back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bmr_jax import data, methods
from bmr_jax.cli import main
from bmr_jax.inference import train
from bmr_jax.runs.config import load_config
from bmr_jax.runs.experiment import RunInterrupted, run_experiment
from tests.runs import QUICKSTART, REPO, TINY, Crash, assert_same_run, at, records

CONFIG = load_config(QUICKSTART, TINY)


@pytest.fixture
def uninterrupted(tiny_run):
    return tiny_run


def _segment(out, point, action, log):
    """Runs until ``point`` and ``action`` there; returns the error's line, if any."""
    try:
        run_experiment(CONFIG, out, progress=False, log=log.append, on_event=at(point, action))
    except Crash:
        return "crash"
    except RunInterrupted as e:
        return str(e)
    raise AssertionError(f"the run never reached {point}")


# each case: interruptions one after another (a resume between each), then what the resumes
# said; steps count within the block (20 per block). Together they stop a run at every kind
# of point: during training, during evaluation, at the between-blocks step, between a metrics
# line and its checkpoint, after a checkpoint, before the first step.
CASES = {
    "SIGTERM mid-block (resumed at that step), then at the between-blocks step": (
        [(("step", 2, 7), "SIGTERM"), (("between", 3, 0), "SIGTERM")],
        ["resuming block 2 at step 7", "resuming after block 2/3"]),
    "SIGINT during evaluation (its checkpoint, no second reduce), then SIGTERM mid-block": (
        [(("evaluate", 2, 20), "SIGINT"), (("step", 3, 3), "SIGTERM")],
        ["resuming after block 2/3", "resuming block 3 at step 3"]),
    "crash mid-block, during evaluation, between a metrics line and its checkpoint": (
        [(("step", 2, 11), "crash"), (("evaluate", 2, 20), "crash"), (("metrics", 2, 0), "crash")],
        ["resuming after block 1/3"] * 3),
    "crash before the first step, then after a checkpoint": (
        [(("step", 1, 1), "crash"), (("checkpoint", 2, 0), "crash")],
        ["resuming after block 2/3"]),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_interrupted_run_resumes_bit_for_bit(case, uninterrupted, tmp_path):
    stops, resumes = CASES[case]
    out, log = tmp_path / "run", []
    for point, action in stops:
        said = _segment(out, point, action, log)
        assert said == "crash" if action == "crash" else f"{action}: stopped after" in said
        assert not (out / "summary.json").exists()
        if point == ("metrics", 2, 0):  # a metrics line past the last checkpoint
            assert [r["block"] for r in records(out)] == [1, 2]
    run_experiment(CONFIG, out, progress=False, log=log.append)
    assert [line.split(": ", 1)[1] for line in log if "resuming" in line] == resumes
    assert [r["block"] for r in records(out)] == [1, 2, 3]  # the dropped line written again
    assert_same_run(out, uninterrupted)


def test_a_mid_block_checkpoint_is_newer_than_its_block_boundary(tmp_path):
    out = tmp_path / "run"
    said = _segment(out, ("step", 2, 7), "SIGTERM", [])
    assert said.endswith("SIGTERM: stopped after 7 steps of block 2; checkpoint "
                         "block-000001-step-000007.npz (run again to resume)")  # fmt: skip
    from bmr_jax.runs.folder import RunFolder

    names = [p.name for p in RunFolder(out).checkpoints()]
    assert names == ["block-000001.npz", "block-000001-step-000007.npz"]


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(uninterrupted, tmp_path):
    out, log = tmp_path / "run", []
    assert _segment(out, ("checkpoint", 2, 0), "crash", log) == "crash"
    newest = out / "checkpoints" / "block-000002.npz"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short
    run_experiment(CONFIG, out, progress=False, log=log.append)
    assert any("block-000002.npz: unreadable checkpoint" in line for line in log)
    assert any(line.endswith("resuming after block 1/3") for line in log)
    assert_same_run(out, uninterrupted)


def test_keep_checkpoints_keeps_the_newest(tmp_path):
    out = tmp_path / "run"
    config = load_config(QUICKSTART, [*TINY, "train.blocks=4", "train.keep_checkpoints=2"])
    with pytest.raises(Crash):
        run_experiment(config, out, progress=False, log=lambda s: None,
                       on_event=at(("checkpoint", 4, 0), "crash"))  # fmt: skip
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "block-000003.npz", "block-000004.npz"]  # fmt: skip


DRIVER = textwrap.dedent("""
    import json, os, sys
    mode, out, config, overrides = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    from bmr_jax import cli
    from bmr_jax.runs import experiment
    from tests.runs import at
    if mode == "mid-checkpoint-write":  # the second checkpoint's file is written, not renamed
        original_replace, count = os.replace, [0]
        def replace(src, dst):
            if "checkpoints" in str(dst):
                count[0] += 1
                if count[0] == 2:
                    os.kill(os.getpid(), 9)
            return original_replace(src, dst)
        os.replace = replace
        hook = None
    else:  # a signal sent to the process by itself at an exact point
        event, block, step, action = mode.split(":")
        hook = at((event, int(block), int(step)), action)
    original_run = experiment.run_experiment
    experiment.run_experiment = lambda *a, **k: original_run(*a, **k, on_event=hook)
    sys.exit(cli.main(["run", config, *overrides, "--out", out, "--quiet"]))
""")


@pytest.mark.parametrize("mode", ["mid-checkpoint-write", "evaluate:2:20:SIGTERM"])
def test_the_command_line_stops_and_resumes(mode, uninterrupted, tmp_path, capsys):
    """The real process: exit 128 + signal with one line on stderr for SIGTERM; killed by
    SIGKILL in the middle of a checkpoint write; resumed by running it again."""
    driver, out = tmp_path / "driver.py", tmp_path / "run"
    driver.write_text(DRIVER)
    stopped = subprocess.run(
        [sys.executable, str(driver), mode, str(out), QUICKSTART, json.dumps(TINY)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    if mode.endswith("SIGTERM"):
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
        assert stopped.stderr.count("\n") == 1
        assert re.search(r"SIGTERM: stopped after block 2; checkpoint block-000002\.npz ",
                         stopped.stderr)  # fmt: skip
    else:
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr
    if mode == "mid-checkpoint-write":
        assert [p.name for p in (out / "checkpoints").glob("block-*")] == ["block-000001.npz"]
    assert main(["run", QUICKSTART, *TINY, "--out", str(out), "--quiet"]) == 0
    assert "resuming after block" in capsys.readouterr().out
    assert_same_run(out, uninterrupted)


def _poison(block_to_poison, times):
    """A ``run_block`` whose losses turn NaN at step 7 of ``block_to_poison``, ``times`` times."""
    original = train.SVITrainer.run_block
    calls = {"poisoned": 0}

    def run_block(self, state, steps, gamma=None, **kw):
        state, losses = original(self, state, steps, gamma, **kw)
        if kw["description"].startswith(f"block {block_to_poison}/") and calls["poisoned"] < times:
            calls["poisoned"] += 1
            losses = losses.copy()
            losses[6] = np.nan
        return state, losses

    return run_block


def test_nonfinite_loss_stops_naming_block_and_step(tmp_path, monkeypatch, capsys):
    """``train.on_nonfinite: stop`` (the default): exit 3 naming block and step, the last good
    checkpoint kept."""
    monkeypatch.setattr(train.SVITrainer, "run_block", _poison(2, times=1))
    out = tmp_path / "run"
    assert main(["run", QUICKSTART, *TINY, "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "non-finite loss or parameters in block 2 at step 27" in err
    assert err.count("\n") == 1
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["block-000001.npz"]
    assert [r["block"] for r in records(out)] == [1]


def test_nonfinite_loss_rolls_back_with_a_lower_learning_rate(tmp_path, monkeypatch, capsys):
    """``train.on_nonfinite: rollback`` with ``train.rollback_factor: 0.25``: block 2 fails
    twice, and each time the run goes back with the rate times 0.25."""
    monkeypatch.setattr(train.SVITrainer, "run_block", _poison(2, times=2))
    out = tmp_path / "run"
    args = [*TINY, "train.on_nonfinite=rollback", "train.rollback_factor=0.25"]
    assert main(["run", QUICKSTART, *args, "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.count("non-finite loss or parameters at step 27") == 2
    lrs = [r["lr"] for r in records(out)]
    np.testing.assert_allclose(lrs, [1e-2, 1e-2 / 16, 1e-2 / 16], rtol=1e-6)


def test_max_rollbacks_bounds_the_rollbacks(tmp_path, monkeypatch, capsys):
    """``train.max_rollbacks: 1`` with block 2 failing twice: one rollback, then the error
    (exit 3) naming block and step, the last good checkpoint kept (the default, 3, goes on:
    the test above)."""
    monkeypatch.setattr(train.SVITrainer, "run_block", _poison(2, times=2))
    out = tmp_path / "run"
    args = [*TINY, "train.on_nonfinite=rollback", "train.max_rollbacks=1"]
    assert main(["run", QUICKSTART, *args, "--out", str(out), "--quiet"]) == 3
    captured = capsys.readouterr()
    assert captured.out.count("non-finite loss or parameters at step 27") == 1
    assert "non-finite loss or parameters in block 2 at step 27" in captured.err
    assert [r["block"] for r in records(out)] == [1]


def test_real_divergence_is_caught():
    dataset = data.load("mnist_mini", image_size=28)
    settings = methods.TrainSettings(blocks=1, steps_per_block=30, lr=1e30)
    setup = methods.build("flat_ff", dataset, net="lenet_300_100", preset="small",
                          train=settings)
    with pytest.raises(methods.NonFiniteError, match="in block 1 at step"):
        methods.run(setup, dataset, evaluation=methods.EvalSettings(samples=1),
                    hooks=methods.RunHooks(progress=False))  # fmt: skip
