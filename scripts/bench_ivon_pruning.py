"""BMR from IVON's posterior against magnitude pruning at equal sparsity, on real MNIST.

A plain Flax network (no NumPyro) is trained for the same number of steps (batch 120) with:

1. IVON + BMR (``bmr_jax.bmr.pruning.bmr_pruning``, spike-and-slab rule every 500 steps): the
   sparsity it reaches sets the target of the others;
2. IVON + BMR ranking (prune the largest Delta F to the target along the cubic schedule);
3. IVON + magnitude ranking, same schedule (isolates the score: Delta F against |w|);
4. Adam + magnitude ranking, same schedule (the classic baseline, Zhu & Gupta 2017).

Test error of the network at the IVON posterior mean (or the Adam weights), pruned entries zero.

    python scripts/bench_ivon_pruning.py --net lenet_300_100 --steps 10000 --targets 0.9 0.97
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="lenet_300_100")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--lr", type=float, default=0.1, help="IVON learning rate")
    parser.add_argument(
        "--targets",
        type=float,
        nargs="*",
        default=[],
        help="also compare at these pruned fractions (not only BMR's own)",
    )
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from bmr_jax import data, nets
    from bmr_jax.bayes.layers import build_layer_view
    from bmr_jax.bmr import PolynomialSchedule
    from bmr_jax.bmr.pruning import (
        bmr_pruning,
        kernels_and_biases_except,
        magnitude,
        prune_by_score,
        pruned_fraction,
    )
    from bmr_jax.inference.batches import EpochBatches, gather
    from bmr_jax.inference.ivon import ivon, sample_parameters

    spec = nets.get_net_spec(args.net)
    ds = data.load("mnist", image_size=spec.image_size)
    model = nets.create_net(args.net, 10, ds.image_shape, "paper", rngs=nnx.Rngs(0))
    view = build_layer_view(model, ds.image_shape)
    prunable = kernels_and_biases_except([view.last.name])
    graphdef, params0 = nnx.split(model)
    images, labels = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
    every, blocks = 500, args.steps // 500

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train(optimizer, noisy):
        @jax.jit
        def step(params, state, order, i):
            x, y = gather(images, labels, order, i)
            at = sample_parameters(params, state) if noisy else params
            grads = jax.grad(loss_fn)(at, x, y)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        batches = EpochBatches(len(ds.train), 120, jax.random.key(1))
        params, state = params0, optimizer.init(params0)
        start = time.perf_counter()
        for _ in range(args.steps):
            params, state = step(params, state, *batches.next())
        jax.block_until_ready(params)
        seconds = time.perf_counter() - start
        logits = nnx.merge(graphdef, params)(jnp.asarray(ds.test.images))
        error = 100 * float(jnp.mean(jnp.argmax(logits, -1) != jnp.asarray(ds.test.labels)))
        return error, pruned_fraction(state.masks, params, prunable), seconds

    def schedule(target):
        return PolynomialSchedule(final=target, begin=1, end=max(1, int(0.75 * blocks)))

    n = len(ds.train)
    spike_and_slab = bmr_pruning(ivon(args.lr, ess=n), every=every, prunable=prunable)
    rows = [("IVON + BMR (spike-and-slab rule)", *train(spike_and_slab, True))]
    for fraction in [rows[0][2], *args.targets]:
        target = schedule(fraction)
        candidates = [
            ("IVON + BMR ranking", True, bmr_pruning(
                ivon(args.lr, ess=n), every=every, schedule=target, prunable=prunable)),
            ("IVON + magnitude ranking", True, prune_by_score(
                ivon(args.lr, ess=n), score=magnitude, schedule=target, every=every,
                prunable=prunable)),
            ("Adam + magnitude ranking", False, prune_by_score(
                optax.adam(1e-3), score=magnitude, schedule=target, every=every,
                prunable=prunable)),
        ]  # fmt: skip
        for name, noisy, optimizer in candidates:
            rows.append((f"{name}, target {fraction:.4f}", *train(optimizer, noisy)))
    print(f"{args.net} on MNIST, {args.steps} steps at batch 120, IVON lr {args.lr}")
    print("| method | test error | pruned (prunable layers) | seconds |")
    print("|---|---|---|---|")
    for name, error, pruned, seconds in rows:
        print(f"| {name} | {error:.2f} % | {pruned:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
