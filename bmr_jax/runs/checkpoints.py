"""A run state as the arrays of a checkpoint file, and back.

``block-000012.npz`` is the state after block 12 (before block 13's between-blocks step);
``block-000012-step-000300.npz`` is 300 steps into block 13. The file holds the training state
leaf by leaf (``train/0``, ...: guide parameters, optimiser moments, the step counter), the
masks and prior multipliers per layer, the losses and wall time of a partly run block and the
metrics records so far. Reading checks every array against a fresh state's shapes, so a file
of another network is refused rather than loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def checkpoint_name(state) -> str:
    """``block-000012.npz`` at a block boundary, ``block-000012-step-000300.npz`` inside."""
    return f"block-{state.block:06d}" + (f"-step-{state.step:06d}" if state.step else "") + ".npz"


def run_order(path: Path) -> tuple[int, int]:
    """``(block, step)`` of a checkpoint file name, the order in which the run wrote them."""
    parts = path.stem.split("-")
    try:
        return int(parts[1]), int(parts[3]) if len(parts) > 3 else 0
    except (IndexError, ValueError):
        return -1, 0  # not ours: tried last


def checkpoint_arrays(state, records: list[dict]) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint of ``state`` (a ``bmr_jax.methods.RunState``)."""
    arrays = {
        "block": np.asarray(state.block),
        "losses": np.asarray(state.losses, np.float32),
        "seconds": np.asarray([state.seconds, state.between_seconds]),
        "records": np.asarray(json.dumps(records)),
    }
    for i, leaf in enumerate(jax.tree.leaves(state.train)):
        arrays[f"train/{i}"] = _to_numpy(leaf)
    arrays.update({f"mask/{k}": np.asarray(v) for k, v in state.masks.items()})
    arrays.update({f"gamma/{k}": np.asarray(v) for k, v in state.gamma.items()})
    return arrays


def state_from_arrays(arrays: dict, template):
    """``(state, records)`` from a checkpoint's arrays, shaped like ``template`` (a fresh
    ``bmr_jax.methods.initial_state``); ``ValueError``/``KeyError`` if they do not fit."""
    leaves, treedef = jax.tree.flatten(template.train)
    if f"train/{len(leaves)}" in arrays:
        raise ValueError("the checkpoint holds a different training state")
    train = jax.tree.unflatten(
        treedef, [_like(arrays[f"train/{i}"], leaf) for i, leaf in enumerate(leaves)]
    )
    seconds, between_seconds = (float(x) for x in arrays["seconds"])
    state = template._replace(
        block=int(arrays["block"]), train=train,
        masks={k: _like(arrays[f"mask/{k}"], v) for k, v in template.masks.items()},
        gamma={k: _like(arrays[f"gamma/{k}"], v) for k, v in template.gamma.items()},
        losses=arrays["losses"], seconds=seconds, between_seconds=between_seconds,
    )  # fmt: skip
    return state, json.loads(str(arrays["records"]))


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_numpy(x) -> np.ndarray:
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def _like(value: np.ndarray, template):
    if _is_key(template):
        return jax.random.wrap_key_data(jnp.asarray(value))
    if value.shape != template.shape:
        raise ValueError(f"an array of shape {value.shape} where {template.shape} was expected")
    return jnp.asarray(value, dtype=template.dtype)
