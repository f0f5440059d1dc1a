"""Post-hoc pruning of an Adam-trained network (issue 39), scores side by side on one network:
BMR on its Laplace posterior (the spike's Delta F, prior precision calibrated by the evidence,
and without calibration), magnitude, and Optimal Brain Damage's saliency from the same
curvature. Each is pruned to the same fractions of the kernels (ranked across layers) and
evaluated on the test set, as pruned or after ``--refit`` Adam steps on the kept weights, and
the spike-and-slab rule's own operating point is reported.

    python scripts/posthoc_prune.py [--net lenet_300_100] [--steps 6000] [--seed 137]
        [--curvature-data 10000] [--refit 600] [--sampled] [--json FILE]

Prints a Markdown table of test error per fraction and score, the calibrated prior precision,
and the seconds of training, curvature and pruning.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bmr_jax import data, nets, posthoc
from bmr_jax.bmr.pruning import global_masks, pruned_fraction, selected_leaves
from bmr_jax.inference import baseline

FRACTIONS = (0.9, 0.95, 0.9667, 0.99, 0.9967)


def _error(graphdef, params, masks, split, refit=None) -> float:
    """Test error (%) of ``params`` pruned by ``masks``, after ``refit(params, masks)``."""
    pruned = jax.tree.map(lambda p, m: jnp.where(m, p, 0.0), params, masks)
    if refit is not None:
        pruned = refit(pruned, masks)
    model = nnx.merge(graphdef, pruned)
    return 100.0 * (1.0 - baseline.accuracy(model, split))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="lenet_300_100")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--steps", type=int, default=6000, help="Adam steps at batch 100")
    parser.add_argument("--seed", type=int, default=137)
    parser.add_argument("--curvature-data", type=int, default=10000,
                        help="training images the GGN sums over (scaled to the whole set)")
    parser.add_argument("--refit", type=int, default=0,
                        help="Adam steps refitting the kept weights after each pruning")
    parser.add_argument("--sampled", action="store_true",
                        help="the GGN from one sampled label a datum (10x cheaper)")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def _scores(params, ggn):
    """``(scores, calibrated posterior, prior precisions)``: higher score = keep."""
    delta = posthoc.calibrate_prior_precision(params, ggn, scope="leaf")
    posteriors = {"bmr_calibrated": posthoc.laplace_posterior(params, ggn, delta),
                  "bmr_delta_1": posthoc.laplace_posterior(params, ggn, 1.0)}  # fmt: skip
    scores = {name: jax.tree.map(jnp.negative, posthoc.laplace_delta_f(post))
              for name, post in posteriors.items()}  # fmt: skip
    scores["obd"] = posthoc.obd_saliency(posteriors["bmr_calibrated"])
    scores["magnitude"] = jax.tree.map(jnp.abs, params)
    return scores, posteriors["bmr_calibrated"], delta


def _print(result: dict, images: int) -> None:
    print(f"{result['net']} on {result['dataset']}, seed {result['seed']}, {result['steps']} "
          f"Adam steps: dense error {result['dense_error']:.2f} %; refit "
          f"{result['refit_steps']} steps; GGN {'sampled' if result['sampled_ggn'] else 'exact'} "
          f"on {images} images")  # fmt: skip
    print("| score | " + " | ".join(f"{f:.2%} pruned ({1 / (1 - f):.0f}x)" for f in FRACTIONS)
          + " |")
    print("|---|" + "---|" * len(FRACTIONS))
    for name, errors in result["errors"].items():
        print(f"| {name} | " + " | ".join(f"{errors[f]:.2f}" for f in FRACTIONS) + " |")
    own = result["spike_and_slab"]
    print(f"spike-and-slab rule: {own['pruned']:.2%} pruned, error {own['error']:.2f} %")
    print("seconds:", {k: round(v, 1) for k, v in result["seconds"].items()})


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    ds = data.load(args.dataset, image_size=nets.get_net_spec(args.net).image_size)
    model = nets.create_net(args.net, ds.num_classes, ds.image_shape, "paper",
                            rngs=nnx.Rngs(args.seed))  # fmt: skip
    seconds, start = {}, time.perf_counter()
    baseline.fit(model, ds.train, steps=args.steps, batch_size=100, seed=args.seed,
                 progress=False)  # fmt: skip
    seconds["train"], start = time.perf_counter() - start, time.perf_counter()
    graphdef, params = nnx.split(model, nnx.Param)

    def apply(p, x):
        return nnx.merge(graphdef, p)(x)

    def refit(p, masks):
        return posthoc.refit(apply, p, masks, ds.train.images, ds.train.labels,
                             steps=args.refit, seed=args.seed)  # fmt: skip

    n = min(args.curvature_data, len(ds.train))
    key = jax.random.key(args.seed) if args.sampled else None
    ggn = posthoc.ggn_diagonal(apply, params, ds.train.images[:n], key=key)
    ggn = jax.tree.map(lambda h: h * (len(ds.train) / n), ggn)  # the whole set's sum
    seconds["curvature"], start = time.perf_counter() - start, time.perf_counter()
    scores, calibrated, delta = _scores(params, ggn)
    after = refit if args.refit else None
    selected = selected_leaves(params)
    alive = jax.tree.map(lambda x: jnp.ones(x.shape, bool), params)
    rows = {name: {f: _error(graphdef, params, global_masks(s, alive, selected, f), ds.test,
                             after) for f in FRACTIONS} for name, s in scores.items()}  # fmt: skip
    own = posthoc.prune_laplace(calibrated)
    own_result = {"pruned": pruned_fraction(own, params),
                  "error": _error(graphdef, params, own, ds.test, after)}  # fmt: skip
    seconds["prune"] = time.perf_counter() - start
    result = {
        "net": args.net, "dataset": args.dataset, "seed": args.seed, "steps": args.steps,
        "dense_error": _error(graphdef, params, alive, ds.test),
        "prior_precision": {"/".join(map(str, p)): float(d) for p, d in
                            jax.tree_util.tree_leaves_with_path(delta)},
        "errors": rows, "refit_steps": args.refit, "sampled_ggn": args.sampled,
        "spike_and_slab": own_result, "seconds": seconds,
    }  # fmt: skip
    _print(result, n)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1, default=float)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
