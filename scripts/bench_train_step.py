"""Times one plain Optax Adam training step of each network, and the effect of huge pages.

Real Fashion-MNIST batches (through the same loader users use; ``BMR_JAX_DATA`` defaults to
``../shared/data`` beside the repository), after compilation, median of ``--repeats`` steps.

    python scripts/bench_train_step.py --nets lenet5 vit mixer --preset small
    python scripts/bench_train_step.py --hugetlb-ab      # the same, with and without
                                                         # GLIBC_TUNABLES=glibc.malloc.hugetlb=1,
                                                         # side by side, printing the ratio

The A/B mode runs this script twice in child processes (the allocator reads GLIBC_TUNABLES at
start-up only), interleaving nothing else, and prints milliseconds per step and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HUGETLB = "glibc.malloc.hugetlb=1"


def time_steps(name: str, preset: str, batch: int, repeats: int) -> float:
    """Median seconds of one jitted Adam step of ``name`` on real Fashion-MNIST batches."""
    from bmr_jax import data, nets
    from bmr_jax.runs.bench import adam_runner, time_round_robin

    ds = data.load("fashion_mnist", image_size=nets.get_net_spec(name).image_size)
    runner = adam_runner(name, preset, ds, batch)
    return time_round_robin({"adam": runner}, repeats, warmup=1)["adam"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["mlp", "lenet5", "vit", "mixer"])
    parser.add_argument("--preset", default="small", choices=("paper", "small"))
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--hugetlb-ab", action="store_true", help="compare with/without")
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))

    if not args.hugetlb_ab:
        result = {n: time_steps(n, args.preset, args.batch, args.repeats) for n in args.nets}
        if args.json:
            print(json.dumps(result))
        else:
            for n, seconds in result.items():
                print(f"{n:14s} {args.preset:6s} batch {args.batch}: {1000 * seconds:8.2f} ms/step")
        return

    child = [sys.executable, __file__, "--json", "--nets", *args.nets, "--preset", args.preset,
             "--batch", str(args.batch), "--repeats", str(args.repeats)]  # fmt: skip
    runs = {}
    for label, tunables in (("default", None), ("hugetlb", HUGETLB)):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        out = subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout
        runs[label] = json.loads(out.strip().splitlines()[-1])
    print(f"Adam step, preset {args.preset}, batch {args.batch}, median of {args.repeats}")
    print(f"{'net':14s} {'default ms':>11s} {'hugetlb ms':>11s} {'speed-up':>9s}")
    for n in args.nets:
        a, b = runs["default"][n], runs["hugetlb"][n]
        print(f"{n:14s} {1000 * a:11.2f} {1000 * b:11.2f} {a / b:8.2f}x")


if __name__ == "__main__":
    main()
