"""Where the time of a mean-field SVI step goes, and what its compiled HLO looks like.

Times side by side in one process (compiled, round-robin, medians), for one network and batch:

- ``adam step``: the plain Optax Adam step on the Flax network (forward, backward, update);
- ``mean-field step``: one Flat-FF SVI step through ``SVITrainer`` (dropout off);
- ``normal draws``: ``jax.random.normal`` of as many values as the guide draws per step
  (one per latent weight), the reparameterisation noise alone;
- ``guide optimiser``: the default optimiser's (AdaBelief) update alone on the guide's
  parameters (a location and a scale per weight: twice the network's size);
- ``forward+backward``: the loss gradient of the plain network at fixed weights.

Then the SVI step's optimised HLO: how many fusions and custom calls, how many of the state's
buffers are donated (aliased input to output, so no copy), and whether anything goes to host.

    python scripts/profile_svi_step.py --net mlp
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mlp")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"))
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))

    import jax
    import optax
    from flax import nnx

    from bmr_jax import data, methods, nets
    from bmr_jax.inference import baseline
    from bmr_jax.inference.batches import gather
    from bmr_jax.runs.bench import adam_runner, time_round_robin

    ds = data.load("fashion_mnist", image_size=nets.get_net_spec(args.net).image_size)
    setup = methods.build(methods.Method("flat_ff", "flat", "mean_field", 5e-3), ds,
                          net=args.net, preset=args.preset,
                          train=methods.TrainSettings(batch_size=args.batch))  # fmt: skip
    trainer, gamma = setup.trainer, setup.bnet.full_gamma()
    box = [trainer.init()]

    def svi_step(i):
        box[0], loss = trainer.step(jax.random.key(i), box[0], gamma)
        return loss

    guide_params = jax.tree.map(jax.numpy.copy, trainer.params(box[0]))  # the state is donated
    latents = sum(v.size for k, v in guide_params.items() if k.endswith("/z/loc"))
    normal = jax.jit(lambda key: jax.random.normal(key, (latents,)))
    keys = jax.random.split(jax.random.key(1), 8)
    optimizer = optax.adabelief(5e-3)
    opt_state = optimizer.init(guide_params)
    grads = jax.tree.map(lambda p: p * 1e-3, guide_params)

    @jax.jit
    def optimiser_update(grads, opt_state, params):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    module = nets.create_net(args.net, 10, ds.image_shape, args.preset, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    images, labels = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
    order = jax.random.permutation(jax.random.key(0), 120 * (len(ds.train) // 120))
    order = order.reshape(-1, args.batch)

    @jax.jit
    def forward_backward(params, i):
        x, y = gather(images, labels, order, i)
        return jax.grad(lambda p: baseline.cross_entropy(nnx.merge(graphdef, p, rest)(x), y))(
            params
        )

    runners = {
        "adam step": adam_runner(args.net, args.preset, ds, args.batch),
        "mean-field step": svi_step,
        "normal draws": lambda i: normal(keys[i % 8]),
        "guide optimiser": lambda i: optimiser_update(grads, opt_state, guide_params),
        "forward+backward": lambda i: forward_backward(params, i % len(order)),
    }
    medians = time_round_robin(runners, args.rounds)
    step = medians["mean-field step"]
    print(f"{args.net} ({args.preset}), batch {args.batch}, {latents:,} latent weights, "
          f"median of {args.rounds} rounds")  # fmt: skip
    print(f"{'':18s} {'ms':>8s} {'of MF step':>11s}")
    for name, seconds in medians.items():
        print(f"{name:18s} {1000 * seconds:8.2f} {seconds / step:10.0%}")

    compiled = trainer._update.lower(*box[0], jax.random.key(0), trainer.images, trainer.labels,
                                     trainer.epoch_order(0), 0,
                                     jax.tree.map(jax.numpy.asarray, gamma)).compile()  # fmt: skip
    hlo = compiled.as_text()
    entry = hlo[hlo.index("ENTRY") :]
    counts = {
        name: len(re.findall(pattern, entry))
        for name, pattern in (
            ("fusions", r"= \S+ fusion\("),
            ("custom calls", r"custom-call\("),
            ("while loops (JAX's rolled threefry loops on CPU)", r" while\("),
            ("host transfers (send/recv/infeed/outfeed)", r"\b(?:send|recv|infeed|outfeed)\("),
        )
    }
    donated = hlo.count("may-alias") + hlo.count("must-alias")  # input_output_alias entries
    print("\nHLO of the SVI step (optimised, entry computation):")
    print("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    print(f"  donated (aliased) state buffers: {donated} of {len(jax.tree.leaves(box[0]))}")


if __name__ == "__main__":
    main()
