"""Sparse VD at other compressions from one finished run: its final posterior pruned at lower
``log alpha`` thresholds, no training after it.

    python scripts/sparse_vd_thresholds.py RUN [--thresholds 3 2 1 0 -1] [--samples 100]

Sparse VD has one operating point per run, the weights with ``log alpha = log sigma^2 - log
theta^2 > 3`` pruned (Molchanov et al. 2017, section 4.3). A lower threshold ``t`` prunes more:
here a weight is kept while ``log alpha <= t`` and the run's own final mask keeps it, so the
thresholds only add pruning. The run sets its mask before each block, so ``t = 3`` is the run
as it ended plus the weights whose log alpha passed 3 during its last block (on LeNet-5-Caffe
at 10 epochs: 62x against the run's 56x; on LeNet-300-100 at 200: 120.1x against 119.7x).
Nothing is refitted, so each line is what Sparse VD reaches at that compression without
retraining: an upper bound on the error a run pruned there from the start would have. Each
line is the posterior predictive's test error, NLL and ECE, and the compression (dead units
counted), from the same posterior draws' keys. The run must be a finished ``sparse_vd`` run.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from bmr_jax.bayes.priors.log_uniform import log_alpha
from bmr_jax.bmr.reduce import gamma_from_masks, sparsity
from bmr_jax.errors import BmrJaxError
from bmr_jax.export.from_run import restore_run
from bmr_jax.inference import evaluate


def thresholded(guide, params, masks, threshold):
    """``{layer: kept}``: the run's mask and ``log alpha <= threshold``."""
    return {layer: masks[layer] & (log_alpha(params[f"{layer}/z/loc"],
                                             params[f"{layer}/z/scale"]) <= threshold)
            for layer in guide.layers()}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[3, 2, 1, 0, -1])
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        run = restore_run(args.run)
        if run.config.method != "sparse_vd":
            raise BmrJaxError(f"{args.run}: a {run.config.method} run, not sparse_vd")
    except BmrJaxError as error:
        print(f"sparse_vd_thresholds: {error}", file=sys.stderr)
        return 2
    setup, state, test = run.setup, run.state, run.dataset.test
    params = setup.trainer.params(state.train)
    predictive = evaluate.make_predictive(setup.bnet, setup.guide)
    print("| log alpha kept <= | compression | error % | NLL | ECE |\n|---|---|---|---|---|")
    for threshold in args.thresholds:
        masks = thresholded(setup.guide, params, state.masks, threshold)
        probs = evaluate.predictive_probs(setup.bnet, setup.guide, params, test.images,
                                          key=jax.random.key(0), samples=args.samples,
                                          gamma=gamma_from_masks(masks),
                                          predictive=predictive)  # fmt: skip
        m = evaluate.classification_metrics(probs, jnp.asarray(test.labels))
        counts = sparsity(masks, setup.bnet.view, setup.sequential)
        print(f"| {threshold:g} | {counts['compression_alive']:.1f}x | "
              f"{100 * (1 - m['acc']):.2f} | "
              f"{m['nll']:.3f} | {m['ece']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
