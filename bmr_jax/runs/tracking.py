"""Experiment tracking: a run's metrics in TensorBoard and MLflow, beside its run folder.

The run folder stays the record of a run (DESIGN.md); trackers copy what it holds to the tools
people already use, and nothing they do can stop or change a run:

- ``tracking.tensorboard: true`` writes event files to ``RUN/tensorboard`` (tensorboardX):
  the loss of every SVI step (``train/loss``), and at every block's last step its metrics
  (``test/acc``, ``test/nll``, ``test/ece``, ``test/lpd`` when evaluated; ``block/loss``,
  ``sparsity/pruned_fraction``, ``dead_fraction``, the three compression counts, ``train/lr``
  and the seconds) and every layer's pruned fraction (``pruned/<layer>``).
- ``tracking.mlflow: URI`` logs to the MLflow tracking store at ``URI`` (a server, or
  ``sqlite:///path/mlflow.db``): the resolved config as params, every block's metrics at its
  global step, and at the end the run folder's ``summary.json``, ``config.yaml``,
  ``metrics.jsonl`` and ``posterior.npz`` as artefacts. The MLflow run's id is kept in
  ``RUN/mlflow.json``, so a resumed run continues the same MLflow run.

A resumed run logs no block twice: each tracker keeps the last block it logged
(``tensorboard/logged.json``; MLflow's own metric history), logs the blocks after it that the
run folder already holds (their per-step losses died with the process that ran them), and
TensorBoard is told to drop any later event an interrupted process wrote (``purge_step``).
A tracker that fails (not installed, a store that cannot be reached, a full disk) warns once
and is off for the rest of the run. Both are the optional extra ``bmr-jax[tracking]``.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from bmr_jax.runs.config import dump_config, flat_settings
from bmr_jax.runs.folder import RunFolder, atomic_write
from bmr_jax.runs.tracking_settings import TrackingSettings

TEST_METRICS = ("acc", "nll", "ece", "lpd")
BLOCK_METRICS = {"loss": "block/loss", "pruned_fraction": "sparsity/pruned_fraction",
                 "dead_fraction": "sparsity/dead_fraction",
                 "compression_alive": "sparsity/compression_alive",
                 "compression_by_mask": "sparsity/compression_by_mask",
                 "weight_compression_by_mask": "sparsity/weight_compression_by_mask",
                 "lr": "train/lr", "train_seconds": "seconds/train",
                 "reduce_seconds": "seconds/reduce", "eval_seconds": "seconds/eval"}  # fmt: skip


def block_scalars(record: dict) -> dict:
    """``{tag: value}`` of a metrics record (``bmr_jax.methods.run``'s), the test metrics
    left out when the block was not evaluated."""
    out = {f"test/{k}": record[k] for k in TEST_METRICS if record.get(k) is not None}
    out.update({tag: record[k] for k, tag in BLOCK_METRICS.items() if record.get(k) is not None})
    out.update({f"pruned/{layer}": v for layer, v in (record.get("pruned_by_layer") or {}).items()})
    return {tag: float(v) for tag, v in out.items()}


class TensorBoardTracker:
    """Event files in ``RUN/tensorboard`` through tensorboardX's ``SummaryWriter``."""

    name = "tensorboard"

    def __init__(self, folder: RunFolder, steps_per_block: int):
        self.logdir = folder.path / "tensorboard"
        self.marker = self.logdir / "logged.json"
        self.steps_per_block = steps_per_block
        self.writer = None

    def start(self, config, records: list[dict]) -> None:
        from tensorboardX import SummaryWriter

        logged = json.loads(self.marker.read_text())["block"] if self.marker.is_file() else 0
        # events an interrupted process wrote after its last logged block are dropped
        self.writer = SummaryWriter(str(self.logdir), purge_step=logged * self.steps_per_block + 1)
        for record in records:
            if record["block"] > logged:
                self._block(record)

    def block(self, record: dict, losses: np.ndarray) -> None:
        first = record["step"] - len(losses) + 1
        for step, loss in enumerate(np.asarray(losses, np.float64), first):
            self.writer.add_scalar("train/loss", loss, step)
        self._block(record)

    def _block(self, record: dict) -> None:
        for tag, value in block_scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()
        atomic_write(self.marker, json.dumps({"block": record["block"]}).encode())

    def finish(self, summary: dict, folder: RunFolder) -> None:
        pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MlflowTracker:
    """One MLflow run per run folder, through ``mlflow.tracking.MlflowClient``."""

    name = "mlflow"
    ARTIFACTS = ("summary.json", "config.yaml", "metrics.jsonl", "posterior.npz")

    def __init__(self, folder: RunFolder, uri: str, experiment: str):
        self.folder, self.uri, self.experiment = folder, uri, experiment
        self.client = self.run_id = None
        self.finished = False

    def start(self, config, records: list[dict]) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id = self._resumed_run()
        if self.run_id is None:
            self.run_id = self._new_run(config)
        else:
            self.client.update_run(self.run_id, status="RUNNING")
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "block/loss")}
        for record in records:
            if record["step"] not in logged:
                self._block(record)

    def _new_run(self, config) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        experiment = (found.experiment_id if found
                      else self.client.create_experiment(self.experiment))  # fmt: skip
        tags = {"bmr_jax.run_folder": str(self.folder.path),
                "bmr_jax.config": dump_config(config)[:5000]}  # fmt: skip
        run_id = self.client.create_run(experiment, run_name=self.folder.path.name,
                                        tags=tags).info.run_id  # fmt: skip
        atomic_write(self.folder.path / "mlflow.json",
                     json.dumps({"tracking_uri": self.uri, "run_id": run_id}).encode())
        self.run_id = run_id
        self._params(flat_settings(config.to_dict()))
        return run_id

    def _resumed_run(self) -> str | None:
        path = self.folder.path / "mlflow.json"
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return saved["run_id"] if saved.get("tracking_uri") == self.uri else None

    def _params(self, settings: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v)
                  for k, v in settings.items()]  # fmt: skip
        self.client.log_batch(self.run_id, params=params)

    def block(self, record: dict, losses: np.ndarray) -> None:
        self._block(record)

    def _block(self, record: dict) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, record["step"])
                   for tag, value in block_scalars(record).items()]  # fmt: skip
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, summary: dict, folder: RunFolder) -> None:
        for name in self.ARTIFACTS:
            if (folder.path / name).is_file():
                self.client.log_artifact(self.run_id, str(folder.path / name))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def close(self) -> None:
        if self.run_id is not None and not self.finished:  # stopped: a resume reopens it
            self.client.set_terminated(self.run_id, "KILLED")


class Tracking:
    """The trackers of one run, each call guarded: a tracker that raises warns once (naming
    itself and the error) and is dropped; the run goes on untouched."""

    def __init__(self, trackers):
        self.trackers = list(trackers)

    @classmethod
    def for_run(cls, settings: TrackingSettings, folder: RunFolder, steps_per_block: int):
        trackers = []
        if settings.tensorboard:
            trackers.append(TensorBoardTracker(folder, steps_per_block))
        if settings.mlflow:
            trackers.append(MlflowTracker(folder, settings.mlflow, settings.mlflow_experiment))
        return cls(trackers)

    def _call(self, method: str, *args) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:  # noqa: BLE001 -- tracking must never stop a run
                self.trackers.remove(tracker)
                hint = " (pip install 'bmr-jax[tracking]')" if isinstance(e, ImportError) else ""
                warnings.warn(f"tracking.{tracker.name}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}{hint}; it is off for "
                              "the rest of this run", RuntimeWarning, stacklevel=3)  # fmt: skip
                try:
                    tracker.close()
                except Exception:  # noqa: BLE001
                    pass

    def start(self, config, records: list[dict]) -> None:
        self._call("start", config, records)

    def block(self, record: dict, losses) -> None:
        self._call("block", record, losses)

    def finish(self, summary: dict, folder: RunFolder) -> None:
        self._call("finish", summary, folder)

    def close(self) -> None:
        self._call("close")


__all__ = ["MlflowTracker", "TensorBoardTracker", "Tracking", "TrackingSettings", "block_scalars"]
