"""Run folders: the resolved config, metrics per block, the summary, and a checkpoint.

    DIR/.bmr-jax-run     marks the folder as ours (a folder without it is never written to)
    DIR/config.yaml      the fully resolved config
    DIR/metrics.jsonl    one JSON object per finished block
    DIR/checkpoints/     the last K states (``block-000012.npz``: after block 12, before block
                         13's between-blocks step; ``block-000012-step-000300.npz``: 300 steps
                         into block 13, written on SIGINT/SIGTERM); a finished run keeps its
                         final one, from which raising ``train.blocks`` continues it
    DIR/summary.json     written when the run is complete
    DIR/posterior.npz    the final posterior-median weight matrices and masks per layer

Every file is written atomically (a temporary file in the same folder, flushed, then renamed),
so an interrupted run never leaves a half-written file. A checkpoint holds everything needed to
continue bit for bit (:mod:`bmr_jax.runs.checkpoints`): the training state (guide parameters,
optimiser moments, the step counter that is also the data cursor), masks and prior multipliers,
the losses of a partly run block and the metrics so far; on resume, metrics.jsonl is rewritten
from it (dropping later lines). An unreadable newest checkpoint falls back to the one before.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from bmr_jax.errors import BmrJaxError
from bmr_jax.runs.checkpoints import (
    checkpoint_arrays,
    checkpoint_name,
    run_order,
    state_from_arrays,
)

MARKER = ".bmr-jax-run"


class RunFolderError(BmrJaxError):
    """The output folder cannot be used (not ours, or holding a different run)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename. Raises
    :class:`OutputError` naming ``path`` and the reason if its folder cannot be created or the
    file cannot be written (``path`` is then as it was, and no temporary file is left)."""
    from bmr_jax.errors import OutputError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputError(f"{path}: cannot create folder {path.parent} ({reason})") from e
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        umask = os.umask(0)
        os.umask(umask)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask)  # what open() would give, not mkstemp's 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # the error that matters is the one below
        if isinstance(e, OSError):
            raise OutputError(f"{path}: cannot write ({e.strerror or type(e).__name__})") from e
        raise


def block_seconds(record: dict) -> float:
    """A metrics record's wall time: training, reduce and evaluation (``seconds``, or the sum
    of its parts in folders written before that key was recorded)."""
    if "seconds" in record:
        return record["seconds"]
    return record["train_seconds"] + record["reduce_seconds"] + record["eval_seconds"]


class RunFolder:
    """A run's output folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def read_config(self):
        """The run's resolved :class:`bmr_jax.runs.config.Config`; refuses a folder without
        ``config.yaml`` and ``metrics.jsonl`` (what reports and figures read), and a
        ``config.yaml`` that cannot be read or is not a valid config."""
        import yaml

        from bmr_jax.runs.config import ConfigError, from_dict
        from bmr_jax.runs.config_files import load_yaml

        if not self.config_path.is_file() or not self.metrics_path.is_file():
            raise RunFolderError(
                f"{self.path}: not a run folder with config.yaml and metrics.jsonl"
            )
        try:
            values = load_yaml(self.config_path.read_bytes())
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise RunFolderError(f"{self.config_path}: cannot read ({reason})") from None
        except yaml.YAMLError as e:  # also bytes that are not text
            first = str(e).splitlines()[0]
            raise RunFolderError(f"{self.config_path}: not valid YAML ({first})") from None
        if not isinstance(values, dict):
            raise RunFolderError(f"{self.config_path}: not a mapping of config keys")
        try:
            return from_dict(values)
        except ConfigError as e:
            raise RunFolderError(f"{self.config_path}: {e}") from None

    def is_finished(self) -> bool:
        return self.summary_path.is_file()

    def check_ours(self) -> None:
        """Refuses a path that is not a folder, or a non-empty folder that is not a run's."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path}: exists and is not a folder")
        if self.path.is_dir() and any(self.path.iterdir()) and not (self.path / MARKER).is_file():
            raise RunFolderError(
                f"{self.path}: not empty and not a bmr-jax run folder; choose another --out"
            )

    def read_config_text(self) -> str | None:
        """The folder's config.yaml as text (``None`` when it has none); refuses a folder that
        is not ours."""
        self.check_ours()
        if not self.config_path.is_file():
            return None
        try:
            return self.config_path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or type(e).__name__
            raise RunFolderError(f"{self.config_path}: cannot read ({reason})") from None

    def claim(self, config_yaml: str) -> None:
        """Makes the folder ours for a run of ``config_yaml`` (the caller has checked that a
        config already there is the same run: ``bmr_jax.runs.experiment.claim_folder``)."""
        self.check_ours()
        atomic_write(self.path / MARKER, b"bmr-jax run folder\n")
        atomic_write(self.config_path, config_yaml.encode())

    def metrics(self) -> list[dict]:
        """The per-block records of ``metrics.jsonl`` (none if it is absent); raises
        :class:`RunFolderError` naming a line that is not a JSON object."""
        if not self.metrics_path.is_file():
            return []
        try:
            lines = self.metrics_path.read_bytes().splitlines()
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise RunFolderError(f"{self.metrics_path}: cannot read ({reason})") from None
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
                reason = (f"{e.msg}: column {e.colno}" if isinstance(e, json.JSONDecodeError)
                          else "not UTF-8 text")  # fmt: skip
                raise RunFolderError(
                    f"{self.metrics_path}: line {number} is not valid JSON ({reason})"
                ) from None
            if not isinstance(record, dict):
                raise RunFolderError(f"{self.metrics_path}: line {number} is not a JSON object")
            records.append(record)
        return records

    def append_metrics(self, record: dict) -> None:
        """Adds ``record``, replacing the records of its block and later ones."""
        self.write_metrics([*(r for r in self.metrics() if r["block"] < record["block"]), record])

    def read_summary(self) -> dict:
        """The finished run's ``summary.json``; :class:`RunFolderError` if it is unreadable."""
        try:
            summary = json.loads(self.summary_path.read_bytes())
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise RunFolderError(f"{self.summary_path}: cannot read ({reason})") from None
        except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
            reason = (f"{e.msg}: line {e.lineno} column {e.colno}"
                      if isinstance(e, json.JSONDecodeError) else "not UTF-8 text")  # fmt: skip
            raise RunFolderError(f"{self.summary_path}: not valid JSON ({reason})") from None
        if not isinstance(summary, dict):
            raise RunFolderError(f"{self.summary_path}: not a JSON object")
        return summary

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.summary_path, (json.dumps(summary, indent=2) + "\n").encode())

    @property
    def posterior_path(self) -> Path:
        return self.path / "posterior.npz"

    def save_posterior(self, weights: dict, masks: dict) -> None:
        """The final posterior-median weight matrices and masks, per layer (in the order of
        the forward pass)."""
        arrays = {"layers": np.asarray(list(weights))}
        arrays.update({f"weight/{k}": np.asarray(v) for k, v in weights.items()})
        arrays.update({f"mask/{k}": np.asarray(masks[k]) for k in weights})
        with tempfile.TemporaryFile() as buffer:
            np.savez_compressed(buffer, **arrays)
            buffer.seek(0)
            atomic_write(self.posterior_path, buffer.read())

    def load_posterior(self) -> tuple[dict, dict]:
        """``(weights, masks)`` as saved by :meth:`save_posterior`."""
        with np.load(self.posterior_path) as saved:
            layers = [str(x) for x in saved["layers"]]
            return ({k: saved[f"weight/{k}"] for k in layers},
                    {k: saved[f"mask/{k}"] for k in layers})  # fmt: skip

    # ------------------------------------------------------------------ checkpoints

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first: in run order, a block's mid-block checkpoints
        after the boundary before it (``block-000003-step-000047.npz`` is 47 steps into
        block 4, after ``block-000003.npz``)."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(self.checkpoints_dir.glob("block-*.npz"), key=run_order)

    def save_checkpoint(self, state, records: list[dict], keep: int = 3) -> Path:
        """Writes the run state ``state`` (a ``bmr_jax.methods.RunState``) and the metrics
        ``records`` so far; keeps the newest ``keep`` checkpoints."""
        path = self.checkpoints_dir / checkpoint_name(state)
        with tempfile.TemporaryFile() as buffer:
            np.savez(buffer, **checkpoint_arrays(state, records))
            buffer.seek(0)
            atomic_write(path, buffer.read())
        for old in self.checkpoints()[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, template, log=print):
        """``(state, records)`` of the newest readable checkpoint, shaped like ``template`` (a
        fresh ``bmr_jax.methods.initial_state``); ``None`` if there is none. An unreadable
        one (a file cut short, another network's) falls back to the one before."""
        for path in reversed(self.checkpoints()):
            try:
                return self._read_checkpoint(path, template)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                log(f"{path}: unreadable checkpoint ({type(e).__name__}); trying the one before")
        return None

    def _read_checkpoint(self, path, template):
        with np.load(path) as saved:
            return state_from_arrays(dict(saved), template)

    def write_metrics(self, records: list[dict]) -> None:
        atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records).encode())

    def remove_checkpoints(self, keep_final: bool = False) -> None:
        """Removes the checkpoints (all but the newest with ``keep_final``: a finished run's
        final state, from which raising ``train.blocks`` continues it), and temporary files
        of writes that were killed."""
        if not self.checkpoints_dir.is_dir():
            return
        paths = self.checkpoints()
        for path in [*paths[: -1 if keep_final else None], *self.checkpoints_dir.glob(".block-*")]:
            path.unlink(missing_ok=True)
        if self.checkpoints_dir.is_dir() and not any(self.checkpoints_dir.iterdir()):
            self.checkpoints_dir.rmdir()

    def clear(self) -> None:
        """Removes the run's files and its trackers' state (``--force`` on another config's run)."""
        self.remove_checkpoints()
        for path in (self.metrics_path, self.summary_path, self.posterior_path, self.config_path):
            path.unlink(missing_ok=True)
        (self.path / "mlflow.json").unlink(missing_ok=True)
        shutil.rmtree(self.path / "tensorboard", ignore_errors=True)
