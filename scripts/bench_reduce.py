"""Cost of BMR: the whole reduce step against a training block, and Delta F throughput.

1. For each network (small presets, Fashion-MNIST, batch 120): the median time of the whole
   jitted reduce step (read the guide, Delta F of every weight, spike-and-slab rule, masks)
   against a 500-step SVI block, estimated as 500 x the median step time (steps timed in
   the same process).
2. Delta F throughput: the elementwise kernel (reads mean and precision, writes Delta F)
   against a same-bytes elementwise jnp operation (``a * b + 1``: two reads, one write) for
   1e4 to 1e7 weights, both jitted, median of repeats.

    python scripts/bench_reduce.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["lenet5", "vit", "mixer"])
    parser.add_argument("--preset", default="small", choices=("paper", "small"))
    parser.add_argument("--steps", type=int, default=30, help="SVI steps timed per net")
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))

    import jax
    import jax.numpy as jnp

    from bmr_jax import bmr, data, methods, nets

    print(f"Reduce step vs a 500-step block ({args.preset} presets, batch 120, "
          f"{jax.devices()[0].platform})")  # fmt: skip
    print(f"{'net':8s} {'weights':>9s} {'step ms':>8s} {'block s':>8s} {'reduce ms':>10s} "
          f"{'of block':>9s}")  # fmt: skip
    for name in args.nets:
        ds = data.load("fashion_mnist", image_size=nets.get_net_spec(name).image_size)
        setup = methods.build("bmr_ss", ds, net=name, preset=args.preset)
        trainer = setup.trainer
        view = setup.bnet.view
        state = trainer.init()
        masks = {s.name: jnp.ones(s.shape, bool) for s in view.bayesian_layers}
        gamma = bmr.gamma_from_masks(masks)
        box = [state]

        def step(box=box, trainer=trainer, gamma=gamma):
            box[0], loss = trainer.step(jax.random.key(0), box[0], gamma)
            loss.block_until_ready()

        step_seconds = _median_seconds(step, args.steps)
        reduce_seconds = _median_seconds(
            lambda setup=setup, masks=masks, gamma=gamma, box=box: jax.block_until_ready(
                setup.between(box[0], masks, gamma, 2, jax.random.key(0))[1]
            ),
            20,
        )
        weights = sum(s.size for s in view.bayesian_layers)
        block = 500 * step_seconds
        print(f"{name:8s} {weights:9,d} {1000 * step_seconds:8.2f} {block:8.2f} "
              f"{1000 * reduce_seconds:10.3f} {100 * reduce_seconds / block:8.3f}%")  # fmt: skip

    print("\nDelta F throughput vs a same-bytes elementwise op (a * b + 1)")
    print(
        f"{'weights':>10s} {'delta_f ms':>11s} {'a*b+1 ms':>9s} {'relative':>9s} {'ns/weight':>10s}"
    )
    kernel = jax.jit(lambda m, p: bmr.delta_f(m, p, 1.0, 0)[0])  # the spike, as rules use it
    reference = jax.jit(lambda a, b: a * b + 1.0)
    for n in (10_000, 100_000, 1_000_000, 10_000_000):
        key_m, key_p = jax.random.split(jax.random.key(n))
        mean = jax.random.normal(key_m, (n,))
        precision = jnp.exp(jax.random.normal(key_p, (n,)))
        repeats = 200 if n <= 100_000 else 30
        args = (mean, precision)
        t_kernel = _median_seconds(lambda a=args: kernel(*a).block_until_ready(), repeats)
        t_ref = _median_seconds(lambda a=args: reference(*a).block_until_ready(), repeats)
        print(f"{n:10,d} {1000 * t_kernel:11.3f} {1000 * t_ref:9.3f} {t_ref / t_kernel:8.0%} "
              f"{1e9 * t_kernel / n:10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
