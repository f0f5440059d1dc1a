"""Quality against the classic baselines on real MNIST: BMR-S&S vs gradual magnitude pruning.

For each network (LeNet-300-100, LeNet-5-Caffe) and the same training budget (blocks x 500
steps, batch 120):

1. BMR-S&S from ``configs/mnist/<net>-bmr_ss.yaml`` through ``bmr_jax.runs.experiment`` (a run
   folder under ``--runs``; a finished run is reused, an unfinished one resumed);
2. gradual magnitude pruning (Zhu & Gupta 2017; ``bmr_jax.bmr.pruning``) with Adam 1e-3 on the same
   Flax network, pruning the same entries (every layer but the last, kernels and biases,
   ranked globally), its target sparsity set to the pruned fraction BMR reached, reached
   by 75 % of the budget along the cubic schedule and fine-tuned after;
3. optionally (``--dense``) plain Adam with the same budget.

Compression is all weights / non-zero weights of the whole network (REFERENCE_RESULTS.md B):
weights that only feed a dead unit count as zero, for both methods.

    python scripts/bench_anchors.py --net lenet_300_100 --blocks 50 --dense
    python scripts/bench_anchors.py --net lenet_300_100 --blocks 50 --bmr bmr.inclusion_rate=alive
    python scripts/bench_anchors.py --net lenet5_caffe --blocks 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SPARSE_VD = {"lenet_300_100": (1.92, 68), "lenet5_caffe": (0.75, 280)}  # error %, compression


def _compression(view, masks) -> float:
    """All weights over the weights left (dead units propagated) of a sequential network."""
    import numpy as np

    from bmr_jax import bmr

    full = {s.name: np.asarray(masks[s.name]) if s.name in masks else np.ones(s.shape, bool)
            for s in view.layers}  # fmt: skip
    effective = bmr.propagate_dead_units(full, view)
    return sum(s.size for s in view.layers) / sum(int(m.sum()) for m in effective.values())


def run_bmr(net, blocks, runs_dir, overrides=()):
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.experiment import run_experiment
    from bmr_jax.runs.folder import RunFolder

    schedule = [f"train.blocks={blocks}", f"eval.every={blocks}"]
    config = load_config(REPO_ROOT / "configs" / "mnist" / f"{net}-bmr_ss.yaml",
                         [*schedule, *overrides])  # fmt: skip
    out = Path(runs_dir) / ",".join([f"{net}-bmr_ss-{blocks}x500", *overrides])
    summary = run_experiment(config, out, progress=False, log=lambda *a: None)
    summary = summary or RunFolder(out).read_summary()
    weights, masks = RunFolder(out).load_posterior()
    return summary, weights, masks


def posterior_median_error(net, dataset, weights, masks):
    """Test error of the deterministic network at the posterior-median weights, pruned
    entries exactly zero: the compressed network one would deploy."""
    import jax.numpy as jnp
    from flax import nnx

    from bmr_jax import nets
    from bmr_jax.bayes.layers import build_layer_view
    from bmr_jax.inference import baseline

    model = nets.create_net(net, 10, dataset.image_shape, "paper", rngs=nnx.Rngs(0))
    view = build_layer_view(model, dataset.image_shape)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    matrices = {k: jnp.where(masks[k], w, 0.0) for k, w in weights.items()}
    nnx.update(model, view.write(params, matrices))
    model.eval()
    return 100 * (1 - baseline.accuracy(model, dataset.test))


def run_magnitude(net, dataset, steps, target, every, seed=137):
    import jax
    import optax
    from flax import nnx

    from bmr_jax import nets
    from bmr_jax.bayes.layers import build_layer_view
    from bmr_jax.bmr import PolynomialSchedule
    from bmr_jax.bmr.pruning import kernels_and_biases_except, magnitude, prune_by_score
    from bmr_jax.inference import baseline
    from bmr_jax.inference.batches import EpochBatches

    model = nets.create_net(net, 10, dataset.image_shape, "paper", rngs=nnx.Rngs(seed))
    view = build_layer_view(model, dataset.image_shape)
    blocks = steps // every
    if target > 0:
        schedule = PolynomialSchedule(final=target, begin=1, end=max(1, int(0.75 * blocks)))
        prunable = kernels_and_biases_except([view.last.name])
        optimizer = prune_by_score(
            optax.adam(1e-3), score=magnitude, schedule=schedule, every=every, prunable=prunable
        )
    else:
        optimizer = optax.adam(1e-3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = baseline.TrainState(params, rest, optimizer.init(params))
    step = baseline.make_train_step(graphdef, optimizer)
    batches = EpochBatches(len(dataset.train), 120, jax.random.key(seed))
    images, labels = jax.device_put(dataset.train.images), jax.device_put(dataset.train.labels)
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = step(state, images, labels, *batches.next())
    loss.block_until_ready()
    seconds = time.perf_counter() - start
    nnx.update(model, state.params, state.rest)
    model.eval()
    error = 100 * (1 - baseline.accuracy(model, dataset.test))
    if target > 0:
        masks = view.matrices(state.opt_state.masks)
        masks = {s.name: masks[s.name] for s in view.layers if s.prunable}
        compression = _compression(view, masks)
        pruned = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.size for m in masks.values())
    else:
        compression, pruned = 1.0, 0.0
    return {"error": error, "compression": compression, "pruned": pruned, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", required=True, choices=sorted(SPARSE_VD))
    parser.add_argument("--blocks", type=int, default=50, help="blocks of 500 steps")
    parser.add_argument("--runs", default=str(REPO_ROOT / "runs" / "anchors"))
    parser.add_argument("--dense", action="store_true", help="also train the dense network")
    parser.add_argument(
        "--bmr",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides of the BMR run, e.g. bmr.inclusion_rate=alive",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))

    from flax import nnx

    from bmr_jax import data, nets
    from bmr_jax.bayes.layers import build_layer_view
    from bmr_jax.runtime import enable_compilation_cache

    enable_compilation_cache()
    spec = nets.get_net_spec(args.net)
    dataset = data.load("mnist", image_size=spec.image_size)
    steps = 500 * args.blocks
    view = build_layer_view(
        nets.create_net(args.net, 10, dataset.image_shape, "paper", rngs=nnx.Rngs(0)),
        dataset.image_shape,
    )
    summary, weights, masks = run_bmr(args.net, args.blocks, args.runs, args.bmr)
    bmr = {"compression": _compression(view, masks), "pruned": summary["pruned_fraction"],
           "seconds": summary["seconds"]}  # fmt: skip
    label = " ".join(["BMR-S&S", *args.bmr])
    rows = [
        {"method": f"{label}, 100-sample predictive", "error": 100 * (1 - summary["acc"]), **bmr},
        {"method": f"{label}, posterior-median net",
         "error": posterior_median_error(args.net, dataset, weights, masks), **bmr},
    ]  # fmt: skip
    pruned = run_magnitude(args.net, dataset, steps, summary["pruned_fraction"], 500)
    rows.append({"method": "magnitude pruning (Adam)", **pruned})
    if args.dense:
        rows.append({"method": "dense (Adam)", **run_magnitude(args.net, dataset, steps, 0.0, 500)})
    error, compression = SPARSE_VD[args.net]
    print(f"{args.net} on MNIST, {args.blocks} x 500 steps, batch 120")
    print("| method | test error | compression | pruned (prunable layers) | minutes |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['error']:.2f} % | {r['compression']:.1f}x "
              f"| {r['pruned']:.4f} | {r['seconds'] / 60:.1f} |")  # fmt: skip
    print(f"| Sparse VD (REFERENCE_RESULTS.md B) | {error:.2f} % | {compression}x | - | - |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
