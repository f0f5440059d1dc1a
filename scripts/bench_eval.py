"""Cost of the 100-sample posterior predictive on the 10,000-image Fashion-MNIST test set.

Builds Flat-FF on the given network, trains it for a few steps (the cost of evaluation does
not depend on how trained the guide is), compiles the predictive on one chunk, then times the
whole evaluation once.

    python scripts/bench_eval.py --net lenet5 --samples 100
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="lenet5")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"))
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))

    import jax

    from bmr_jax import data, methods, nets
    from bmr_jax.inference import evaluate

    ds = data.load("fashion_mnist", image_size=nets.get_net_spec(args.net).image_size)
    setup = methods.build("flat_ff", ds, net=args.net, preset=args.preset)
    state, _ = setup.trainer.run_block(setup.trainer.init(), 50, key=jax.random.key(0),
                                       progress=False)  # fmt: skip
    params = setup.trainer.params(state)
    predictive = evaluate.make_predictive(setup.bnet, setup.guide)

    def evaluate_on(images):
        return evaluate.predictive_probs(
            setup.bnet, setup.guide, params, images, key=jax.random.key(0),
            samples=args.samples, chunk_size=args.chunk, predictive=predictive,
        )  # fmt: skip

    evaluate_on(ds.test.images[: args.chunk])  # compile
    start = time.perf_counter()
    probs = evaluate_on(ds.test.images)
    seconds = time.perf_counter() - start
    passes = args.samples * len(ds.test)
    print(
        f"{args.net} ({args.preset}): {args.samples}-sample predictive on {len(ds.test):,} "
        f"test images in {seconds:.1f} s ({passes / seconds / 1e3:.1f}k forward passes/s); "
        f"acc {evaluate.classification_metrics(probs, ds.test.labels)['acc']:.3f} "
        f"after 50 steps"
    )


if __name__ == "__main__":
    main()
