"""Crashes and signals: a run killed at any moment (mid-block, mid-checkpoint write, between
the metrics and the checkpoint, by SIGKILL or SIGINT) resumes to results bit-identical to an
uninterrupted run; NaN/inf stops a run naming the block and step, or rolls back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bmr_jax import methods, train
from bmr_jax.cli import main
from bmr_jax.config import load_config
from bmr_jax.experiment import run_experiment

REPO = Path(__file__).resolve().parents[1]
CONFIG = ["method=bmr_ss", "data.name=mnist_mini", "net.preset=small", "train.blocks=3",
          "train.steps_per_block=200", "eval.samples=2"]  # fmt: skip
TIMING = {"train_seconds", "reduce_seconds", "eval_seconds", "seconds"}

DRIVER = textwrap.dedent("""
    import json, os, sys
    mode, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from bmr_jax import results, train
    from bmr_jax.config import load_config
    from bmr_jax.experiment import run_experiment
    counter = [0]
    if mode == "mid-block":  # die after 260 SVI steps: 60 steps into block 2
        original_run_block = train.SVITrainer.run_block
        def stop():
            counter[0] += 1
            if counter[0] > 260:
                os._exit(137)
            return False
        def run_block(self, state, steps, gamma=None, **kw):
            return original_run_block(self, state, steps, gamma, **{**kw, "should_stop": stop})
        train.SVITrainer.run_block = run_block
    elif mode == "mid-checkpoint-write":  # the second checkpoint's file is written, not renamed
        original_replace = os.replace
        def replace(src, dst):
            if "checkpoints" in str(dst):
                counter[0] += 1
                if counter[0] == 2:
                    os._exit(137)
            return original_replace(src, dst)
        os.replace = replace
    elif mode == "after-metrics":  # block 2's metrics line is written, its checkpoint is not
        original_save = results.RunFolder.save_checkpoint
        def save(self, *a, **k):
            counter[0] += 1
            if counter[0] == 2:
                os._exit(137)
            return original_save(self, *a, **k)
        results.RunFolder.save_checkpoint = save
    run_experiment(load_config("configs/quickstart.yaml", overrides), out, progress=False)
""")


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _records(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def assert_same_run(a, b):
    """Two run folders hold bit-identical results (timings aside)."""
    assert _records(a) == _records(b)
    with np.load(a / "posterior.npz") as pa, np.load(b / "posterior.npz") as pb:
        assert sorted(pa) == sorted(pb)
        for key in pa:
            np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)
    assert not (a / "checkpoints").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(["run", "configs/quickstart.yaml", *CONFIG, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("mode", ["mid-block", "mid-checkpoint-write", "after-metrics"])
def test_killed_run_resumes_bit_for_bit(mode, uninterrupted, tmp_path, capsys):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    crashed = subprocess.run([sys.executable, str(driver), mode, str(out), json.dumps(CONFIG)],
                             cwd=REPO, env=_env(), capture_output=True, text=True)  # fmt: skip
    assert crashed.returncode == 137, crashed.stderr
    assert not (out / "summary.json").exists()
    if mode == "after-metrics":  # a metrics line past the last checkpoint, dropped on resume
        assert len(_records(out)) == 2
    assert main(["run", "configs/quickstart.yaml", *CONFIG, "--out", str(out), "--quiet"]) == 0
    assert "resuming after block 1/3" in capsys.readouterr().out
    assert_same_run(out, uninterrupted)


def _wait_for(path: Path, process, timeout=240.0):
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signals_checkpoint_or_lose_at_most_the_block(signum, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "bmr_jax.cli", "run", "configs/quickstart.yaml", *CONFIG,
               "--out", str(out), "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(out / "checkpoints" / "block-000001.npz", process)
    time.sleep(1.5)  # into block 2 (its first reduce compiles for about a second)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    if signum != signal.SIGKILL:  # caught: checkpoint where it stopped, exit 128 + signal
        assert process.returncode == 128 + signum, stderr
        assert stderr.count("\n") == 1
        pattern = rf"{signum.name}: stopped after (\d+) steps of block (\d+); checkpoint (\S+) "
        stopped = re.search(pattern, stderr)
        steps, block, name = int(stopped[1]), int(stopped[2]), stopped[3]
        expected = f"block-{block - 1:06d}" + (f"-step-{steps:06d}" if steps else "") + ".npz"
        assert name == expected and (out / "checkpoints" / name).is_file()
    else:
        assert process.returncode == -signal.SIGKILL
    assert main(["run", "configs/quickstart.yaml", *CONFIG, "--out", str(out), "--quiet"]) == 0
    assert "resuming after block" in capsys.readouterr().out
    assert_same_run(out, uninterrupted)


def test_a_different_config_is_refused_unless_forced(uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    run_experiment(load_config("configs/quickstart.yaml", CONFIG), out, progress=False,
                   stop_after=1)  # fmt: skip
    other = [*CONFIG, "seed=5"]
    assert main(["run", "configs/quickstart.yaml", *other, "--out", str(out), "--quiet"]) == 2
    assert "holds a run of a different config" in capsys.readouterr().err
    assert (out / "checkpoints" / "block-000001.npz").exists()  # nothing touched
    assert main(["run", "configs/quickstart.yaml", *other, "--out", str(out), "--quiet",
                 "--force"]) == 0  # fmt: skip
    assert load_config(out / "config.yaml").seed == 5
    assert [r["block"] for r in _records(out)] == [1, 2, 3]


def _poison(block_to_poison, times):
    """A ``run_block`` whose losses turn NaN at step 7 of ``block_to_poison``, ``times`` times."""
    original = train.SVITrainer.run_block
    calls = {"block": 0, "poisoned": 0}

    def run_block(self, state, steps, gamma=None, **kw):
        state, losses = original(self, state, steps, gamma, **kw)
        if kw["description"].startswith(f"block {block_to_poison}/") and calls["poisoned"] < times:
            calls["poisoned"] += 1
            losses = losses.copy()
            losses[6] = np.nan
        return state, losses

    return run_block


def test_nonfinite_loss_stops_naming_block_and_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train.SVITrainer, "run_block", _poison(2, times=1))
    out = tmp_path / "run"
    assert main(["run", "configs/quickstart.yaml", *CONFIG, "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "non-finite loss or parameters in block 2 at step 207" in err
    assert err.count("\n") == 1
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["block-000001.npz"]
    assert [r["block"] for r in _records(out)] == [1]


def test_nonfinite_loss_rolls_back_with_a_lower_learning_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train.SVITrainer, "run_block", _poison(2, times=2))
    out = tmp_path / "run"
    args = [*CONFIG, "train.on_nonfinite=rollback", "train.rollback_factor=0.25"]
    assert main(["run", "configs/quickstart.yaml", *args, "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.count("non-finite loss or parameters at step 207") == 2
    lrs = [r["lr"] for r in _records(out)]
    np.testing.assert_allclose(lrs, [1e-2, 1e-2 / 16, 1e-2 / 16], rtol=1e-6)


def test_real_divergence_is_caught():
    from bmr_jax import data

    dataset = data.load("mnist_mini", image_size=32)
    setup = methods.build("flat_ff", dataset, net="lenet5", preset="small", lr=1e30)
    with pytest.raises(methods.NonFiniteError, match="in block 1 at step"):
        methods.run(setup, dataset, blocks=1, steps_per_block=30, eval_samples=1,
                    progress=False)  # fmt: skip
