"""SVI step cost against a plain Optax Adam step on the same Flax network and batch.

All steps are built in one process on the same network, real Fashion-MNIST data and batch
size, compiled, then timed round-robin (one step of each method per round, so drift and
thermal effects hit all equally); the median over rounds is reported with its ratio to Adam.

    python scripts/bench_svi_step.py --net lenet5 --batch 120 --rounds 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="lenet5")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"))
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--methods", nargs="+", default=["flat_map", "flat_ff", "tiered_ff"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))

    import jax
    import optax
    from flax import nnx

    from bmr_jax import baseline, data, methods, nets

    ds = data.load("fashion_mnist", image_size=nets.get_net_spec(args.net).image_size)

    # plain Adam on the Flax network
    module = nets.create_net(args.net, 10, ds.image_shape, args.preset, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    adam = optax.adam(1e-3)
    adam_step = baseline.make_train_step(graphdef, adam)
    images, labels = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
    order = jax.random.permutation(jax.random.key(0), (len(ds.train) // args.batch) * args.batch)
    order = order.reshape(-1, args.batch)
    adam_state = [baseline.TrainState(params, rest, adam.init(params))]

    def run_adam(i):
        adam_state[0], loss = adam_step(adam_state[0], images, labels, order, i % len(order))
        return loss

    runners = {"adam": run_adam}
    for name in args.methods:
        method = methods.METHODS.get(name)
        # the same network for every method (dropout off), so only the inference differs
        method = methods.Method(name, method.prior, method.guide, method.lr)
        setup = methods.build(method, ds, net=args.net, preset=args.preset, batch_size=args.batch)
        trainer = setup.trainer
        gamma = setup.bnet.full_gamma()
        state = [trainer.init()]

        def run(i, trainer=trainer, state=state, gamma=gamma):
            state[0], loss = trainer.step(state[0], gamma)
            return loss

        runners[name] = run

    for run in runners.values():  # compile and warm up
        for i in range(3):
            run(i).block_until_ready()
    times = {name: [] for name in runners}
    for i in range(args.rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(i).block_until_ready()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    if args.json:
        print(json.dumps(medians))
        return
    print(f"{args.net} ({args.preset}), batch {args.batch}, median of {args.rounds} rounds, "
          f"{jax.devices()[0].platform}")  # fmt: skip
    for name, seconds in medians.items():
        print(f"{name:10s} {1000 * seconds:8.2f} ms   {seconds / medians['adam']:5.2f}x Adam")


if __name__ == "__main__":
    main()
