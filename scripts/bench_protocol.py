"""A whole run, evaluated on the full network and on the shrunk one (``eval.shrink``), side by
side in one process: the same config twice, into two fresh run folders.

Reported per run: wall time of the whole call, the seconds the run recorded for training,
reductions and evaluation, and per block the largest difference between the two runs' test
metrics (they draw the same posterior samples, so they should agree to float tolerance).

    python scripts/bench_protocol.py CONFIG [OVERRIDE ...] [--out DIR]

``--out`` keeps the two run folders (``DIR/full``, ``DIR/shrunk``); without it they go in a
temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bmr_jax.runs.config import load_config
from bmr_jax.runs.experiment import run_experiment
from bmr_jax.runs.folder import RunFolder

METRICS = ("acc", "nll", "ece", "pruned_fraction", "dead_fraction")


def run_once(config_path: str, overrides: list[str], shrink: bool, out: Path) -> dict:
    config = load_config(config_path, [*overrides, f"eval.shrink={str(shrink).lower()}"])
    begin = time.perf_counter()
    run_experiment(config, out, progress=False, log=lambda *a: None)
    wall = time.perf_counter() - begin
    records = RunFolder(out).metrics()
    phases = {p: sum(r[f"{p}_seconds"] for r in records) for p in ("train", "reduce", "eval")}
    return {"wall": wall, "phases": phases, "records": records}


def largest_differences(full: list[dict], small: list[dict]) -> dict:
    out = {}
    for key in METRICS:
        pairs = [(a[key], b[key]) for a, b in zip(full, small, strict=True)
                 if a[key] is not None]  # fmt: skip
        out[key] = max((abs(a - b) / max(abs(a), 1e-12) for a, b in pairs), default=0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as `bmr-jax run` takes")
    parser.add_argument("--out", help="keep the two run folders here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        runs = {name: run_once(args.config, args.overrides, name == "shrunk", root / name)
                for name in ("full", "shrunk")}  # fmt: skip
    for name, r in runs.items():
        p = r["phases"]
        print(f"{name:>6}: {r['wall']:.0f} s in all; train {p['train']:.0f} s, reduce "
              f"{p['reduce']:.0f} s, evaluation {p['eval']:.0f} s")  # fmt: skip
    full, small = runs["full"], runs["shrunk"]
    print(f"whole run {full['wall'] / small['wall']:.2f}x faster shrunk; evaluation "
          f"{full['phases']['eval'] / small['phases']['eval']:.2f}x")  # fmt: skip
    print("per block (full | shrunk): eval s, acc, pruned")
    for a, b in zip(full["records"], small["records"], strict=True):
        if a["acc"] is not None:
            seconds = f"{a['eval_seconds']:6.1f} | {b['eval_seconds']:6.1f}"
            acc = f"{a['acc']:.4f} | {b['acc']:.4f}"
            pruned = a["pruned_fraction"]
            print(f"  block {a['block']:>3}: {seconds}  acc {acc}  pruned {pruned:.3f}")
    differences = largest_differences(full["records"], small["records"])
    listed = ", ".join(f"{k} {v:.1e}" for k, v in differences.items())
    print(f"largest relative difference: {listed}")


if __name__ == "__main__":
    main()
