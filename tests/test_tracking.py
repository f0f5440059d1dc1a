"""Tracking: TensorBoard event files and an MLflow store get every block once, also across an
interruption, and a failing tracker warns once and leaves the run's results as they were.

The event files are read back with TensorBoard's own reader (``EventAccumulator``, which
applies ``purge_step`` as the TensorBoard UI does), not with the writer's library; the MLflow
store is a local sqlite file read back through MLflow's client.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from bmr_jax.runs.config import load_config
from bmr_jax.runs.experiment import run_experiment
from bmr_jax.runs.tracking import TensorBoardTracker
from tests.runs import QUICKSTART, TINY, Crash, assert_same_run, at, records

pytest.importorskip("tensorboardX")
STEPS = 20  # TINY's steps per block; blocks end at global steps 20, 40, 60


def _run(out, overrides, on_event=None):
    config = load_config(QUICKSTART, [*TINY, *overrides])
    return run_experiment(config, out, progress=False, log=lambda s: None, on_event=on_event)


def _scalars(logdir) -> dict:
    """``{tag: [(step, value), ...]}`` as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def test_tensorboard_logs_every_block_once_across_an_interruption(tmp_path, tiny_run):
    from tensorboardX import SummaryWriter

    out = tmp_path / "run"
    with pytest.raises(Crash):  # block 1 logged, then the process dies 5 steps into block 2
        _run(out, ["tracking.tensorboard=true"], at(("step", 2, 5), "crash"))
    # as if the dying process had got an event of a later block out before its marker
    stray = SummaryWriter(str(out / "tensorboard"))
    stray.add_scalar("block/loss", 99.0, 2 * STEPS)
    stray.close()
    _run(out, ["tracking.tensorboard=true"])
    scalars = _scalars(out / "tensorboard")
    saved = records(out)
    assert scalars["block/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in saved]
    assert [s for s, _ in scalars["test/acc"]] == [20, 40, 60]
    assert [v for _, v in scalars["sparsity/pruned_fraction"]] == \
        pytest.approx([r["pruned_fraction"] for r in saved])  # fmt: skip
    layer = next(iter(saved[-1]["pruned_by_layer"]))
    assert scalars[f"pruned/{layer}"][-1][1] == pytest.approx(saved[-1]["pruned_by_layer"][layer])
    losses = scalars["train/loss"]
    assert [s for s, _ in losses] == list(range(1, 3 * STEPS + 1))  # every step once
    for r in saved:  # the block's loss is the mean of its steps'
        block = [v for s, v in losses if r["step"] - STEPS < s <= r["step"]]
        assert np.mean(block) == pytest.approx(r["loss"], rel=1e-5)
    assert json.loads((out / "tensorboard" / "logged.json").read_text()) == {"block": 3}
    assert_same_run(out, tiny_run)  # tracking changed nothing of the run's own results


def test_tensorboard_catches_up_a_block_logged_by_no_one(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Crash):  # block 2 checkpointed, then dead before its tracker ran
        _run(out, ["tracking.tensorboard=true"], at(("checkpoint", 2, 0), "crash"))
    _run(out, ["tracking.tensorboard=true"])
    scalars = _scalars(out / "tensorboard")
    assert [s for s, _ in scalars["block/loss"]] == [20, 40, 60]
    # block 2's step losses died with its process; blocks 1 and 3 have theirs
    assert [s for s, _ in scalars["train/loss"]] == [*range(1, 21), *range(41, 61)]


def test_mlflow_logs_params_every_block_once_and_the_artefacts(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # a sqlite store's artefacts go to ./mlruns, not the checkout

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    tracking = [f"tracking.mlflow={uri}", "tracking.mlflow_experiment=tests"]
    with pytest.raises(Crash):
        _run(out, tracking, at(("checkpoint", 2, 0), "crash"))
    run_id = json.loads((out / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "KILLED"
    _run(out, tracking)
    run = client.get_run(run_id)
    saved = records(out)
    history = client.get_metric_history(run_id, "block/loss")
    assert sorted((m.step, m.value) for m in history) == \
        [(r["step"], pytest.approx(r["loss"])) for r in saved]  # fmt: skip
    assert [m.step for m in client.get_metric_history(run_id, "test/acc")] == [20, 40, 60]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.blocks"] == "3" and run.data.params["method"] == "bmr_ss"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"summary.json", "config.yaml", "metrics.jsonl", "posterior.npz"}
    assert len(client.search_runs([run.info.experiment_id])) == 1  # resumed, not a second run


def test_a_failing_tracker_warns_once_and_the_run_goes_on(tmp_path, tiny_run, monkeypatch):
    calls = []

    def broken(self, record, losses):
        calls.append(record["block"])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardTracker, "block", broken)
    out = tmp_path / "run"
    (tmp_path / "blocked").write_text("a file where the store's folder would be")
    bad_store = f"sqlite:///{tmp_path / 'blocked' / 'mlflow.db'}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(out, ["tracking.tensorboard=true", f"tracking.mlflow={bad_store}"])
    ours = [str(w.message) for w in caught if str(w.message).startswith("tracking.")]
    assert len(ours) == 2, ours
    assert ours[0].startswith("tracking.mlflow: ") or ours[1].startswith("tracking.mlflow: ")
    assert any("tracking.tensorboard: OSError" in m and "No space left" in m for m in ours)
    assert calls == [1]  # off after its first failure
    assert_same_run(out, tiny_run)


def test_tracking_keys_may_change_on_resume(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        _run(out, [], at(("checkpoint", 1, 0), "crash"))
    _run(out, ["tracking.tensorboard=true"])  # the same run, now tracked
    assert [s for s, _ in _scalars(out / "tensorboard")["block/loss"]] == [20, 40, 60]


def test_force_starts_the_trackers_afresh(tmp_path):
    out = tmp_path / "run"
    _run(out, ["tracking.tensorboard=true", "train.blocks=2"])
    config = load_config(QUICKSTART, [*TINY, "tracking.tensorboard=true", "seed=5"])
    run_experiment(config, out, progress=False, log=lambda s: None, force=True)
    scalars = _scalars(out / "tensorboard")
    assert scalars["block/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in records(out)]
    assert len(scalars["block/loss"]) == 3  # the new run's three blocks, none of the old two
