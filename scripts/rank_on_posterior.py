"""Is it the posterior or the ranking? (issue 37.3) One finished run's final posterior pruned to
several fractions by each score of :mod:`bmr_jax.bmr.scores` -- Delta F, |mean|, signal-to-noise
(log alpha), random -- and evaluated as it is and after a short refit of the kept weights.

    python scripts/rank_on_posterior.py RUN [RUN ...] --out results/ranking \\
        [--fractions 0.9 0.967 0.99 0.997] [--samples 20] [--refit-steps 600]

Each run needs its final checkpoint and a mean-field guide. A run whose masks are permanent
(BMR with a target) starts from its own masks, so the scores choose which further weights go;
a Sparse VD run (masks recomputed from log alpha before every block) starts from none. The
fraction counts every prunable entry, the run's pruned ones included. The refit continues the
run's own SVI with the masks fixed (Sparse VD's per-step clipping replaced by the masks) for
``--refit-steps`` steps, from a fresh optimiser state at the run's base learning rate (a run
whose rate decays to 0 could not refit from its own). Writes ``OUT.jsonl`` (a line per run,
score, fraction and refit), ``OUT.md`` (the table) and ``OUT.png``/``.pdf`` (error against
compression by mask, a panel per run, a colour per score, solid after the refit).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
from matplotlib.ticker import FuncFormatter, NullFormatter
from numpyro import handlers

from bmr_jax.bmr.reduce import gamma_from_masks, sparsity
from bmr_jax.bmr.scores import SCORES, prune_to, weight_scores
from bmr_jax.errors import BmrJaxError
from bmr_jax.export.from_run import restore_run
from bmr_jax.inference import evaluate
from bmr_jax.inference.train import TrainState
from bmr_jax.methods.between import prior_variances
from bmr_jax.results import figure_style as style
from bmr_jax.runs.experiment import build_setup
from bmr_jax.runs.folder import atomic_write

COLOURS = {"delta_f": "#d62728", "magnitude": "#7f7f7f", "snr": "#bcbd22", "random": "#1f77b4"}
MARKERS = {"delta_f": "D", "magnitude": "o", "snr": "^", "random": "s"}  # D and ^ can coincide
LABELS = {"delta_f": "Delta F", "magnitude": "|mean|", "snr": "signal-to-noise",
          "random": "random"}  # fmt: skip


def posterior_of(run):
    """``(posterior, scales, prior variances, starting masks)`` of a restored run."""
    setup, state = run.setup, run.state
    params = setup.trainer.params(state.train)
    with handlers.substitute(data=setup.guide.median(params)):
        scales = setup.bnet.prior.scales(setup.bnet.view)
    masks = state.masks
    if setup.method.between == "sparse_vd":  # nothing permanent: every weight is scored
        masks = {k: jnp.ones_like(m) for k, m in masks.items()}
    return setup.guide.posterior(params), scales, prior_variances(setup.bnet), masks


def refit_trainer(run):
    """The run's trainer at its base learning rate, held constant, with Sparse VD's per-step
    clipping replaced by the masks (the refit must keep them)."""
    config = replace(run.config, train=replace(run.config.train, lr_schedule="constant"),
                     guide=replace(run.config.guide, sparse_vd_clip="block"))
    return build_setup(config, run.dataset).trainer


def refit(trainer, run, masks, steps):
    """``steps`` more SVI steps of the run's posterior with ``masks`` fixed, from a fresh
    optimiser state (a run with a decaying rate ends at 0) at the run's data position."""
    params = jax.tree.map(jnp.copy, run.state.train.params)
    start = TrainState(params, trainer.optimizer.init(params), jnp.copy(run.state.train.position))
    state, _ = trainer.run_block(start, steps, gamma_from_masks(masks), key=jax.random.key(2),
                                 progress=False)  # fmt: skip
    return state


def measure(run, masks, train_state, predictive, samples):
    """Test metrics and both compressions of ``masks`` on the run's posterior."""
    setup, test = run.setup, run.dataset.test
    probs = evaluate.predictive_probs(setup.bnet, setup.guide, setup.trainer.params(train_state),
                                      test.images, key=jax.random.key(0), samples=samples,
                                      gamma=gamma_from_masks(masks), predictive=predictive)
    metrics = evaluate.classification_metrics(probs, jnp.asarray(test.labels))
    counts = sparsity(masks, setup.bnet.view, setup.sequential)
    return {"error": 100 * (1 - metrics["acc"]), "nll": metrics["nll"], "ece": metrics["ece"],
            **{k: counts[k] for k in ("compression_by_mask", "compression_alive")}}


def rank_run(path, fractions, samples, refit_steps):
    """Every (score, fraction, refit) line of one run."""
    run = restore_run(path)
    posterior, scales, prior_var, start = posterior_of(run)
    prunable = {s.name: s.prunable for s in run.setup.bnet.view.bayesian_layers}
    predictive = evaluate.make_predictive(run.setup.bnet, run.setup.guide)
    trainer = refit_trainer(run) if refit_steps else None
    name = Path(path).name
    for score in SCORES:
        values = weight_scores(score, posterior, scales, prior_var, jax.random.key(1))
        for fraction in fractions:
            masks = prune_to(values, start, prunable, fraction)
            line = {"run": name, "score": score, "fraction": fraction}
            yield {**line, "refit": 0, **measure(run, masks, run.state.train, predictive,
                                                 samples)}  # fmt: skip
            if refit_steps:
                state = refit(trainer, run, masks, refit_steps)
                yield {**line, "refit": refit_steps,
                       **measure(run, masks, state, predictive, samples)}


def table(lines) -> str:
    rows = ["| run | score | fraction | refit steps | compression by mask | alive | error % | "
            "NLL | ECE |", "|---|---|---|---|---|---|---|---|---|"]
    for r in lines:
        rows.append(f"| {r['run']} | {LABELS[r['score']]} | {r['fraction']:g} | {r['refit']} | "
                    f"{r['compression_by_mask']:.1f}x | {r['compression_alive']:.1f}x | "
                    f"{r['error']:.2f} | {r['nll']:.3f} | {r['ece']:.3f} |")
    return "\n".join(rows) + "\n"


def figure(lines, out):
    runs = sorted({r["run"] for r in lines})
    fig, axes = style.subplots(1, len(runs), figsize=(5.5 * len(runs), 3.8))
    for ax, run in zip(axes.ravel(), runs, strict=False):
        for score in SCORES:
            for refit, dash in ((0, "--"), (max(r["refit"] for r in lines), "-")):
                mine = sorted((r for r in lines if (r["run"], r["score"], r["refit"]) ==
                               (run, score, refit)), key=lambda r: r["compression_by_mask"])
                if mine:
                    ax.plot([r["compression_by_mask"] for r in mine], [r["error"] for r in mine],
                            dash, marker=MARKERS[score], mfc="none" if score == "snr" else None,
                            markersize=6 if score == "snr" else 4, color=COLOURS[score],
                            label=f"{LABELS[score]}{', refit' if refit else ''}")
        ax.set(xscale="log", yscale="log", xlabel="compression (all / kept weights, by mask)",
               ylabel="test error (%)", title=run)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    style.legend_outside(fig, axes)
    style.caption(fig, "MNIST test set: one run's final posterior pruned by each score to the "
                  "same fractions; dashed: as pruned, solid: after the refit of the kept weights")
    return style.save(fig, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.9, 0.967, 0.99, 0.997])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--refit-steps", type=int, default=600)
    args = parser.parse_args(argv)
    if not all(0 < f < 1 for f in args.fractions):
        print("rank_on_posterior: --fractions must lie in (0, 1)", file=sys.stderr)
        return 2
    lines = []
    try:
        for path in args.runs:
            for line in rank_run(path, args.fractions, args.samples, args.refit_steps):
                print(json.dumps(line), flush=True)
                lines.append(line)
    except BmrJaxError as error:
        print(f"rank_on_posterior: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out.with_suffix(".jsonl"),
                 "".join(json.dumps(r) + "\n" for r in lines).encode())
    atomic_write(args.out.with_suffix(".md"), table(lines).encode())
    figure(lines, args.out)
    print(table(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
