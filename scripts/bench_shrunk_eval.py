"""The test-set evaluation of a finished run on the full and on the shrunk network
(``eval.shrink``), side by side in one process, at the run's final masks.

Both evaluate the run's final posterior on the whole test set with the run's sample count and
the same key (so the same posterior draws), after one untimed call that compiles; reported:
seconds per evaluation (median of ``--rounds``), the first call's seconds (it compiles), the
time to find the kept units and build the shrunk network, and both sets of metrics.

    python scripts/bench_shrunk_eval.py RUN [RUN ...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np

from bmr_jax import export
from bmr_jax.inference import evaluate, shrunk


def bench(run: str, rounds: int) -> dict:
    restored = export.restore_run(run)
    setup, state, dataset = restored.setup, restored.state, restored.dataset
    samples = restored.config.eval.samples or setup.method.eval_samples
    params = setup.trainer.params(state.train)
    start = time.perf_counter()
    links = shrunk.links_of(setup.bnet, sequential=setup.sequential)
    kept = shrunk.kept_units(setup.bnet, jax.device_get(state.masks), links)
    apply = shrunk.shrunk_apply(setup.bnet, shrunk.shape_of(kept), dataset.image_shape)
    build_seconds = time.perf_counter() - start
    small = evaluate.make_predictive(setup.bnet, setup.guide, apply=apply)
    predictives = {"full": evaluate.make_predictive(setup.bnet, setup.guide),
                   "shrunk": functools.partial(small, aux=shrunk.index_arrays(kept))}
    chunk = restored.config.eval.chunk_size
    chunks = {"full": chunk, "shrunk": shrunk.chunk_size(setup.bnet, kept, chunk)}  # as runs do
    key = jax.random.key(0)

    def evaluate_once(name):
        probs = evaluate.predictive_probs(setup.bnet, setup.guide, params, dataset.test.images,
                                          key=key, samples=samples, gamma=state.gamma,
                                          predictive=predictives[name],
                                          chunk_size=chunks[name])  # fmt: skip
        return evaluate.classification_metrics(probs, dataset.test.labels)

    metrics, first_seconds = {}, {}
    for name in predictives:  # the first call compiles
        begin = time.perf_counter()
        metrics[name] = evaluate_once(name)
        first_seconds[name] = time.perf_counter() - begin
    seconds = {name: [] for name in predictives}
    for _ in range(rounds):
        for name in predictives:
            begin = time.perf_counter()
            evaluate_once(name)
            seconds[name].append(time.perf_counter() - begin)
    units = {n: (s.rows, len(kept[n][0])) for n, s in
             ((s.name, s) for s in setup.bnet.view.layers)}  # fmt: skip
    return {"run": run, "samples": samples, "build_seconds": build_seconds, "units": units,
            "chunks": chunks,
            "seconds": {n: float(np.median(s)) for n, s in seconds.items()},
            "first_seconds": first_seconds,
            "metrics": metrics}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for run in args.runs:
        r = bench(run, args.rounds)
        full, small = r["seconds"]["full"], r["seconds"]["shrunk"]
        print(f"{r['run']}: {r['samples']} samples, chunks of {r['chunks']['full']} and "
              f"{r['chunks']['shrunk']} images; full {full:.1f} s, shrunk {small:.1f} s "
              f"({full / small:.2f}x); kept units found and network built in "
              f"{r['build_seconds']:.1f} s")  # fmt: skip
        first = r["first_seconds"]
        print(f"  first call (compiles): full {first['full']:.1f} s, "
              f"shrunk {first['shrunk']:.1f} s")  # fmt: skip
        print("  units kept: " + ", ".join(f"{n} {a}->{b}" for n, (a, b) in r["units"].items()))
        for name, m in r["metrics"].items():
            print(f"  {name:>6}: " + " ".join(f"{k} {v:.6f}" for k, v in m.items()))


if __name__ == "__main__":
    main()
