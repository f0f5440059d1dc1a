"""Measured latency of networks side by side: what a smaller exported network buys on this
machine (the README's "Deploy the pruned network", ``scripts/bench_export.py``).

Every network's forward pass is jitted and compiled first; then each round calls every network
once in turn on the same batch, so that drift and other load hit all of them alike, and the
median over rounds is reported. Timings are measurements, never test assertions.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def latencies(modules: dict[str, nnx.Module], images, batch: int, rounds: int = 30) -> dict:
    """``{name: median seconds}`` of one forward pass of each module on ``images[:batch]``."""
    x = jnp.asarray(images[:batch])
    calls = {}
    for name, module in modules.items():
        graphdef, state = nnx.split(module)
        forward = jax.jit(lambda state, x, graphdef=graphdef: nnx.merge(graphdef, state)(x))
        jax.block_until_ready(forward(state, x))  # compile
        calls[name] = (forward, state)
    seconds = {name: [] for name in modules}
    for _ in range(rounds):
        for name, (forward, state) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(forward(state, x))
            seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(s)) for name, s in seconds.items()}


def speedup(dense: nnx.Module, small: nnx.Module, images, batch: int = 1000,
            rounds: int = 30) -> float:  # fmt: skip
    """How many times faster ``small`` runs than ``dense`` on ``images[:batch]`` here."""
    measured = latencies({"dense": dense, "small": small}, images, batch, rounds)
    return measured["dense"] / measured["small"]
