"""How much of a finished run's test error is noise from weights left at their prior: one BMR
reduce (METHOD.md 4.1) of its final posterior, no training after it, at several compressions.

    python scripts/reduce_without_refit.py RUN [--fractions 0 0.5 0.9 0.967 0.99] [--samples 100]

For each target fraction the prunable weights are ranked by Delta F over all prunable layers
together (``TargetSparsity(scope="global")``, the frontier's rule, at its final value at once)
and the highest are set to the spike; ``ss`` is one spike-and-slab reduce (the rule of
BMR-S&S). Each line is the posterior predictive's test error, NLL and ECE on the reduced
network, and its compression (dead units counted), from the same posterior draws' keys. The
run must be finished (its final checkpoint); a mean-field guide and a Gaussian prior.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from bmr_jax.bmr.decide import PolynomialSchedule, SpikeAndSlab, TargetSparsity
from bmr_jax.bmr.reduce import gamma_from_masks, make_reduce, sparsity
from bmr_jax.errors import BmrJaxError
from bmr_jax.export.from_run import restore_run
from bmr_jax.inference import evaluate
from bmr_jax.methods.between import prior_variances


def rules(fractions):
    """``(label, rule)`` of every target fraction, then one spike-and-slab reduce."""
    for f in fractions:
        yield f"target {f:g}", TargetSparsity(PolynomialSchedule(final=f), scope="global")
    yield "ss (all)", SpikeAndSlab(rate_over="all")


def evaluated(run, params, predictive, masks, samples):
    """Test metrics of the run's posterior ``params`` with the prior multipliers of ``masks``
    (``predictive``: one compilation shared by every reduce)."""
    setup, test = run.setup, run.dataset.test
    probs = evaluate.predictive_probs(setup.bnet, setup.guide, params, test.images,
                                      key=jax.random.key(0), samples=samples,
                                      gamma=gamma_from_masks(masks),
                                      predictive=predictive)  # fmt: skip
    return evaluate.classification_metrics(probs, jnp.asarray(test.labels))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0, 0.5, 0.9, 0.967, 0.99])
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        run = restore_run(args.run)
    except BmrJaxError as error:
        print(f"reduce_without_refit: {error}", file=sys.stderr)
        return 2
    setup, state = run.setup, run.state
    params = setup.trainer.params(state.train)
    posterior = setup.guide.posterior(params)
    predictive = evaluate.make_predictive(setup.bnet, setup.guide)
    print("| reduce | compression | error % | NLL | ECE |\n|---|---|---|---|---|")
    for label, rule in rules(args.fractions):
        reduce = make_reduce(setup.bnet.view, rule, prior_variances(setup.bnet))
        masks = reduce(posterior, state.masks, 2).masks  # block 2: past the schedule's end
        counts = sparsity(masks, setup.bnet.view, setup.sequential)
        m = evaluated(run, params, predictive, masks, args.samples)
        print(f"| {label} | {counts['compression_alive']:.1f}x | "
              f"{100 * (1 - m['acc']):.2f} | "
              f"{m['nll']:.3f} | {m['ece']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
