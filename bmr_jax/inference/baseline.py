"""Plain (non-Bayesian) Optax training of a Flax NNX classifier: the point-estimate baseline.

This is what "a plain Optax Adam step on the same Flax network" means in the benchmarks, and
what the demo runs until the Bayesian engine replaces it. The step is one ``jax.jit``-compiled
pure function over ``(params, rest, opt_state)`` pytrees (``nnx.split``/``nnx.merge`` outside
the hot loop) with donated buffers; minibatches are gathered on the device from a shuffled
index, so the training data is copied to the device once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from bmr_jax.data import Split
from bmr_jax.inference.batches import EpochBatches, gather


class TrainState(NamedTuple):
    """Everything that changes during training, as pytrees."""

    params: Any  # nnx.State of the nnx.Param variables
    rest: Any  # every other variable (e.g. dropout RNG counters)
    opt_state: optax.OptState


@dataclass
class FitResult:
    """What :func:`fit` returns besides updating the model in place."""

    losses: np.ndarray  # training loss of every step
    seconds: float  # wall time of the loop, compilation included
    steps_per_second: float  # after the first (compiling) step


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation):
    """A jitted ``step(state, images, labels, order, i) -> (state, loss)``.

    The batch is ``images[order[i * B:(i + 1) * B]]`` with ``B = batch_size`` taken from the
    static shape of ``order``'s second axis: ``order`` has shape ``(num_batches, B)``.
    """

    def loss_fn(params, rest, x, y):
        # copy=True: fresh Variables inside this trace, so dropout may advance its RNG count
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss = cross_entropy(model(x), y)
        return loss, nnx.state(model, nnx.Not(nnx.Param))

    @jax.jit(donate_argnums=0)
    def step(state: TrainState, images, labels, order, i):
        x, y = gather(images, labels, order, i)
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.rest, x, y
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, rest, opt_state), loss

    return step


def fit(
    model: nnx.Module,
    train: Split,
    *,
    steps: int,
    batch_size: int = 128,
    optimizer: optax.GradientTransformation | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Trains ``model`` in place by minimising the cross-entropy with ``optimizer``.

    Args:
      model: a classifier mapping NHWC batches to logits.
      train: training images (``float32`` NHWC) and labels.
      steps: number of optimiser steps (minibatches drawn without replacement per epoch).
      batch_size: minibatch size; the last incomplete batch of each epoch is dropped.
      optimizer: any optax optimiser; default ``optax.adam(1e-3)``.
      seed: seed of the data order.
      progress: show a progress bar with the loss and steps/s.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    batches = EpochBatches(len(train), batch_size, jax.random.key(seed))
    optimizer = optimizer or optax.adam(1e-3)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(params, rest, optimizer.init(params))
    step = make_train_step(graphdef, optimizer)
    images, labels = jax.device_put(train.images), jax.device_put(train.labels)

    losses = []
    start = time.perf_counter()
    first_step_done = start
    bar = tqdm(total=steps, disable=not progress, unit="step", leave=False)
    for t in range(steps):
        state, loss = step(state, images, labels, *batches.next())
        losses.append(loss)
        if t == 0:
            loss.block_until_ready()
            first_step_done = time.perf_counter()
        if progress and (t + 1) % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}")
            bar.update(50)
    losses = np.asarray(jax.device_get(losses))
    end = time.perf_counter()
    bar.update(steps - bar.n)
    bar.close()
    nnx.update(model, state.params, state.rest)
    model.eval()
    rate = (steps - 1) / (end - first_step_done) if steps > 1 else float("nan")
    return FitResult(losses=losses, seconds=end - start, steps_per_second=rate)


@jax.jit(static_argnums=0)
def _forward(graphdef: nnx.GraphDef, state, x):
    return nnx.merge(graphdef, state)(x)


def predict_logits(model: nnx.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits of ``model`` (in evaluation mode) for every image, in chunks of ``batch_size``.
    The forward pass is compiled once per network structure and chunk shape, and reused by
    later calls."""
    model.eval()
    graphdef, state = nnx.split(model)
    chunks = [
        _forward(graphdef, state, images[i : i + batch_size])
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(jax.device_get(chunks))


def accuracy(model: nnx.Module, split: Split, batch_size: int = 1000) -> float:
    """Fraction of ``split`` classified correctly by the arg-max of the logits."""
    logits = predict_logits(model, split.images, batch_size)
    return float(np.mean(logits.argmax(axis=-1) == split.labels))
