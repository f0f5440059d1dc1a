"""Run folders: the resolved config, metrics per block, the summary, and a checkpoint.

    DIR/.bmr-jax-run     marks the folder as ours (a folder without it is never written to)
    DIR/config.yaml      the fully resolved config
    DIR/metrics.jsonl    one JSON object per finished block
    DIR/checkpoints/     the last K states (``block-000012.npz``: after block 12;
                         ``block-000012-step-000300.npz``: 300 steps into block 13, written on
                         SIGINT/SIGTERM), removed when the run is complete
    DIR/summary.json     written when the run is complete
    DIR/posterior.npz    the final posterior-median weight matrices and masks per layer

Every file is written atomically (a temporary file in the same folder, flushed, then renamed),
so an interrupted run never leaves a half-written file. A checkpoint holds everything needed to
continue bit for bit: the SVI state (guide parameters, optimiser moments, RNG key), masks and
prior multipliers, the data-order state, the losses of a partly run block and the metrics so
far; on resume, metrics.jsonl is rewritten from it (dropping lines written after it). An
unreadable newest checkpoint falls back to the one before.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bmr_jax.errors import BmrJaxError

MARKER = ".bmr-jax-run"


class RunFolderError(BmrJaxError):
    """The output folder cannot be used (not ours, or holding a different run)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # what open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
        """The run's resolved :class:`bmr_jax.config.Config`; refuses a folder without
        ``config.yaml`` and ``metrics.jsonl`` (what reports and figures read)."""
        from bmr_jax.config import load_config

        if not self.config_path.is_file() or not self.metrics_path.is_file():
            raise RunFolderError(
                f"{self.path}: not a run folder with config.yaml and metrics.jsonl"
            )
        return load_config(self.config_path)

    def is_finished(self) -> bool:
        return self.summary_path.is_file()

    def claim(self, config_yaml: str, same=None) -> None:
        """Makes the folder ours for a run of ``config_yaml``; refuses a foreign or
        different run's folder. ``same(old_yaml) -> bool`` decides whether a folder's existing
        config is the same run (default: identical text)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path}: exists and is not a folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not (self.path / MARKER).is_file():
                raise RunFolderError(
                    f"{self.path}: not empty and not a bmr-jax run folder; choose another --out"
                )
            if self.config_path.is_file():
                old = self.config_path.read_text()
                if old != config_yaml and not (same is not None and same(old)):
                    raise RunFolderError(
                        f"{self.path}: holds a run of a different config; choose another --out"
                    )
        atomic_write(self.path / MARKER, b"bmr-jax run folder\n")
        atomic_write(self.config_path, config_yaml.encode())

    def metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def append_metrics(self, record: dict) -> None:
        lines = [json.dumps(r) for r in self.metrics() if r["block"] < record["block"]]
        atomic_write(self.metrics_path, ("\n".join([*lines, json.dumps(record)]) + "\n").encode())

    def read_summary(self) -> dict:
        return json.loads(self.summary_path.read_text())

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
        """Checkpoint files, oldest first (their names sort in run order)."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(self.checkpoints_dir.glob("block-*.npz"))

    def save_checkpoint(self, run_state, records: list[dict], keep: int = 3) -> Path:
        """Writes ``run_state`` and the metrics ``records`` so far; keeps the newest ``keep``."""
        arrays = {
            "block": np.asarray(run_state.block),
            "step": np.asarray(run_state.step),
            "losses": np.asarray(run_state.losses, np.float32),
            "reduce_seconds": np.asarray(run_state.reduce_seconds),
            "records": np.asarray(json.dumps(records)),
        }
        leaves = jax.tree.leaves(run_state.svi_state)
        for i, leaf in enumerate(leaves):
            arrays[f"svi/{i}"] = _to_numpy(leaf)
        for name, mask in run_state.masks.items():
            arrays[f"mask/{name}"] = np.asarray(mask)
        for name, gamma in run_state.gamma.items():
            arrays[f"gamma/{name}"] = np.asarray(gamma)
        key, position = run_state.batches
        arrays["batches/key"] = _to_numpy(key)
        arrays["batches/position"] = np.asarray(position)
        name = f"block-{run_state.block:06d}"
        if run_state.step:
            name += f"-step-{run_state.step:06d}"
        path = self.checkpoints_dir / f"{name}.npz"
        with tempfile.TemporaryFile() as buffer:
            np.savez(buffer, **arrays)
            buffer.seek(0)
            atomic_write(path, buffer.read())
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, template, log=print):
        """``(state, records)`` of the newest readable checkpoint, shaped like ``template`` (a
        fresh :func:`initial_state`); ``None`` if there is none."""
        for path in reversed(self.checkpoints()):
            try:
                return self._read_checkpoint(path, template)
            except (OSError, ValueError, KeyError, EOFError) as e:
                log(f"{path}: unreadable checkpoint ({type(e).__name__}); trying the one before")
        return None

    def _read_checkpoint(self, path, template):
        from bmr_jax.methods import RunState

        with np.load(path) as saved:
            arrays = dict(saved)
        leaves, treedef = jax.tree.flatten(template.svi_state)
        restored = [_like(arrays[f"svi/{i}"], leaf) for i, leaf in enumerate(leaves)]
        key_template, _ = template.batches
        state = RunState(
            block=int(arrays["block"]),
            svi_state=jax.tree.unflatten(treedef, restored),
            masks={k: jnp.asarray(arrays[f"mask/{k}"]) for k in template.masks},
            gamma={k: jnp.asarray(arrays[f"gamma/{k}"]) for k in template.gamma},
            batches=(_like(arrays["batches/key"], key_template), int(arrays["batches/position"])),
            step=int(arrays["step"]),
            losses=arrays["losses"],
            reduce_seconds=float(arrays["reduce_seconds"]),
        )
        return state, json.loads(str(arrays["records"]))

    def write_metrics(self, records: list[dict]) -> None:
        atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records).encode())

    def remove_checkpoints(self) -> None:
        """Removes the checkpoints, and temporary files of writes that were killed."""
        if not self.checkpoints_dir.is_dir():
            return
        for path in [*self.checkpoints(), *self.checkpoints_dir.glob(".block-*")]:
            path.unlink(missing_ok=True)
        if self.checkpoints_dir.is_dir() and not any(self.checkpoints_dir.iterdir()):
            self.checkpoints_dir.rmdir()

    def clear(self) -> None:
        """Removes the run's files (``--force`` on a folder holding another config's run)."""
        self.remove_checkpoints()
        for path in (self.metrics_path, self.summary_path, self.posterior_path, self.config_path):
            path.unlink(missing_ok=True)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_numpy(x) -> np.ndarray:
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def _like(value: np.ndarray, template):
    if _is_key(template):
        return jax.random.wrap_key_data(jnp.asarray(value))
    return jnp.asarray(value, dtype=template.dtype)
