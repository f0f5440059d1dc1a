"""The block loop (METHOD.md 4.5): between-blocks step -> train -> finite check -> evaluate ->
record -> checkpoint, for every block.

What a state means is one thing at each point. A :class:`RunState` at a block boundary
(``step == 0``) is the state after block ``block``'s evaluation and *before* block
``block + 1``'s between-blocks step; one inside a block (``step > 0``) is ``step`` steps into
block ``block + 1``, after its between-blocks step. Resuming from either continues exactly:
every random draw is keyed by the seed and the block (between-blocks step, evaluation) or the
global step (SVI), never by what ran in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bmr_jax.bmr.reduce import COMPRESSIONS, sparsity
from bmr_jax.errors import BmrJaxError, ConfigError
from bmr_jax.inference import parallel
from bmr_jax.inference.train import TrainState
from bmr_jax.methods.evaluation import make_evaluation
from bmr_jax.methods.settings import EvalSettings
from bmr_jax.methods.setup import Setup


class RunState(NamedTuple):
    """Everything a run needs to continue (a checkpoint's content)."""

    block: int  # blocks completed
    train: TrainState
    masks: dict  # {layer: bool (rows, cols)}, True = kept
    gamma: dict  # {layer: prior multipliers}
    losses: np.ndarray = np.zeros(0, np.float32)  # block + 1's steps so far
    seconds: float = 0.0  # wall time of block + 1 so far (between-blocks step and training)
    between_seconds: float = 0.0  # of which the between-blocks step

    @property
    def step(self) -> int:
        """Steps done in block ``block + 1`` (0: at the boundary, before its between step)."""
        return len(self.losses)


class RunHooks(NamedTuple):
    """How a run talks to its caller. ``on_block(record, state, losses)`` after every block
    (to write metrics and checkpoint; ``losses``: the loss of each of the block's SVI steps);
    ``should_stop()`` before the between-blocks step and every SVI
    step; ``on_event(name, block, step)`` at ``"between"``, ``"step"`` (after each SVI step)
    and ``"evaluate"`` (a test hook to stop runs at exact points)."""

    progress: bool = True
    log: Callable[[str], None] = lambda line: None
    on_block: Callable[[dict, RunState, np.ndarray], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_event: Callable[[str, int, int], None] | None = None

    def event(self, name: str, block: int, step: int) -> None:
        if self.on_event is not None:
            self.on_event(name, block, step)

    def stop(self) -> bool:
        return self.should_stop is not None and self.should_stop()


class RunStopped(Exception):
    """``run`` stopped because ``should_stop()`` said so; ``state`` resumes it."""

    def __init__(self, state: RunState):
        where = (f"{state.step} steps of block {state.block + 1}" if state.step
                 else f"block {state.block}")  # fmt: skip
        super().__init__(f"stopped after {where}")
        self.state = state


class NonFiniteError(BmrJaxError):
    """The loss or the parameters became NaN or infinite; ``state`` is the last good one."""

    def __init__(self, block: int, step: int, state: RunState):
        super().__init__(
            f"non-finite loss or parameters in block {block} at step {step}; the last good "
            f"state is the end of block {state.block} (lower train.lr, or set "
            "train.on_nonfinite=rollback)"
        )
        self.block, self.step, self.state = block, step, state


def initial_state(setup: Setup) -> RunState:
    """The state before the first block: nothing pruned, the guide at its initial values."""
    layers = setup.bnet.view.bayesian_layers
    return RunState(0, setup.trainer.init(), {s.name: jnp.ones(s.shape, bool) for s in layers},
                    setup.bnet.full_gamma())  # fmt: skip


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(train_key, block_key)``: SVI step ``t`` draws from ``fold_in(train_key, t)``,
    block ``b``'s between-blocks step and evaluation from ``fold_in(block_key, b)``."""
    train_key, block_key = jax.random.split(jax.random.key(seed + 1))
    return train_key, block_key


def run(setup: Setup, dataset, *, evaluation: EvalSettings = EvalSettings(),
        resume: RunState | None = None, hooks: RunHooks = RunHooks()) -> list[dict]:  # fmt: skip
    """Runs ``setup`` to ``setup.train.blocks`` blocks from ``resume`` (default: the start),
    evaluating on the test split after every ``evaluation.every``-th block and after the last
    (the other blocks record ``None`` for the test metrics).

    Raises :class:`RunStopped` when ``hooks.should_stop()`` turns true, and
    :class:`NonFiniteError` when the loss or parameters turn NaN/inf (``train.on_nonfinite=
    stop``, or ``rollback`` once ``train.max_rollbacks`` restarts of the block with the
    learning rate times ``train.rollback_factor`` are used up).

    Returns one record per block run: ``block``, ``step``, ``loss`` (mean per-datum negative
    ELBO of the block), ``acc``, ``nll``, ``ece``, ``lpd``, ``pruned_fraction``,
    ``dead_fraction``, the three compression counts (``bmr_jax.bmr.reduce.COMPRESSIONS``),
    ``pruned_by_layer`` (``{layer: pruned fraction}``),
    ``units_by_layer`` (``{layer: output rows still computed}``),
    ``lr``, ``train_seconds``, ``reduce_seconds`` (the
    between-blocks step), ``eval_seconds`` and ``seconds`` (their sum).
    """
    if not isinstance(evaluation, EvalSettings):
        raise ConfigError("run: evaluation must be EvalSettings")
    current = _placed(setup, initial_state(setup) if resume is None else resume)
    if current.block > setup.train.blocks:
        raise ConfigError(f"train.blocks: {setup.train.blocks} is fewer than the "
                          f"{current.block} blocks already run")  # fmt: skip
    evaluate_block = make_evaluation(setup, dataset, evaluation, hooks.progress,
                                     run_keys(setup.seed)[1])  # fmt: skip
    records, rollbacks = [], 0
    if hooks.progress and current.block < setup.train.blocks:
        hooks.log("compiling the training step (the first block starts after it)")
    while current.block < setup.train.blocks:
        block = current.block + 1
        kept = _copy_if(setup.train.on_nonfinite == "rollback", current)
        state, masks, gamma, losses, seconds = _train_block(setup, current, hooks)
        bad_step = _first_nonfinite(setup, state, losses, block)
        if bad_step is not None:
            rollbacks = _check_rollback(setup, block, bad_step, current, kept, rollbacks)
            current = kept._replace(train=setup.trainer.scale_learning_rate(
                kept.train, setup.train.rollback_factor))  # fmt: skip
            hooks.log(f"block {block}: non-finite loss or parameters at step {bad_step}; back "
                      f"to {_where(kept)} with lr {setup.trainer.learning_rate(current.train):.3g}"
                      f" ({rollbacks}/{setup.train.max_rollbacks})")  # fmt: skip
            continue
        hooks.event("evaluate", block, len(losses))
        start = time.perf_counter()
        metrics = evaluate_block(state, masks, gamma, block)
        record = _record(setup, block, losses, metrics, masks, state,
                         *seconds, time.perf_counter() - start)  # fmt: skip
        records.append(record)
        current = RunState(block, state, masks, gamma)
        if hooks.on_block is not None:
            hooks.on_block(record, current, losses)
    setup.state, setup.masks, setup.gamma = current.train, current.masks, current.gamma
    return records


def _placed(setup: Setup, state: RunState) -> RunState:
    """``state``'s arrays on the data-parallel mesh, if the run has one (``parallel``)."""
    train, masks, gamma = parallel.place_replicated((state.train, state.masks, state.gamma),
                                                    setup.trainer.mesh)  # fmt: skip
    return state._replace(train=train, masks=masks, gamma=gamma)


def _train_block(setup: Setup, current: RunState, hooks: RunHooks):
    """Block ``current.block + 1`` from ``current``: its between-blocks step unless resuming
    inside it, then the remaining SVI steps; :class:`RunStopped` if asked to stop."""
    block, start = current.block + 1, time.perf_counter()
    train_key, block_key = run_keys(setup.seed)
    state, masks, gamma, between_seconds = current.train, current.masks, current.gamma, 0.0
    if current.step == 0:
        hooks.event("between", block, 0)
        if hooks.stop():
            raise RunStopped(current)
        if setup.bmr.warmup_blocks < block <= setup.train.blocks - setup.bmr.refit_blocks:
            between_key = jax.random.split(jax.random.fold_in(block_key, block))[0]
            state, masks, gamma, _ = setup.between(state, masks, gamma, block, between_key)
            masks = jax.block_until_ready(masks)
        between_seconds = time.perf_counter() - start
    first = (block - 1) * setup.train.steps_per_block  # the global step before the block
    state, losses = setup.trainer.run_block(
        state, setup.train.steps_per_block - current.step, gamma, key=train_key,
        progress=hooks.progress, description=f"block {block}/{setup.train.blocks}",
        should_stop=hooks.should_stop, on_step=lambda t: hooks.event("step", block, t - first),
    )  # fmt: skip
    losses = np.concatenate([current.losses, losses])
    seconds = current.seconds + time.perf_counter() - start
    between_seconds += current.between_seconds
    if len(losses) == 0:  # stopped before the first step: the boundary is the state to keep
        raise RunStopped(current)
    if len(losses) < setup.train.steps_per_block:
        raise RunStopped(RunState(block - 1, state, masks, gamma, losses, seconds,
                                  between_seconds))  # fmt: skip
    return state, masks, gamma, losses, (seconds, between_seconds)


def _where(state: RunState) -> str:
    return f"step {state.step} of block {state.block + 1}" if state.step else \
        f"the end of block {state.block}"  # fmt: skip


def _copy_if(condition: bool, state: RunState) -> RunState | None:
    """A copy of ``state``'s arrays (the SVI steps donate theirs), if ``condition``."""
    return state._replace(train=jax.tree.map(jnp.copy, state.train)) if condition else None


def _first_nonfinite(setup: Setup, state, losses: np.ndarray, block: int) -> int | None:
    """The global step at which the loss first turned non-finite (the block's last step if
    only the parameters did), or ``None`` when everything is finite."""
    finite = np.isfinite(losses)
    if finite.all() and setup.trainer.all_finite(state):
        return None
    within = int(np.argmin(finite)) + 1 if not finite.all() else len(losses)
    return (block - 1) * setup.train.steps_per_block + within


def _check_rollback(setup: Setup, block: int, step: int, current, kept, rollbacks: int) -> int:
    """The rollback count after one more, or :class:`NonFiniteError` when none is allowed."""
    if kept is None or rollbacks >= setup.train.max_rollbacks:
        raise NonFiniteError(block, step, current)
    return rollbacks + 1


def _record(setup: Setup, block, losses, metrics, masks, state, train_seconds, between_seconds,
            eval_seconds):  # fmt: skip
    """The metrics record of a finished block."""
    counts = sparsity(masks, setup.bnet.view, setup.sequential)
    return {
        "block": block,
        "step": block * setup.train.steps_per_block,
        "loss": float(losses.mean()),
        **metrics,
        "pruned_fraction": counts["pruned_fraction"],
        "dead_fraction": counts["dead_fraction"],
        **{k: counts[k] for k in COMPRESSIONS},
        "pruned_by_layer": counts["layers"],
        "units_by_layer": counts["rows"],
        "lr": setup.trainer.learning_rate(state),
        "train_seconds": train_seconds - between_seconds,
        "reduce_seconds": between_seconds,
        "eval_seconds": eval_seconds,
        # DESIGN.md's contract: the block's wall time (training, reduce and evaluation)
        "seconds": train_seconds + eval_seconds,
    }
