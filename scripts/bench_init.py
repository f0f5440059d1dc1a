"""Building each network from a cold start: Flax's default initialisers against
``bmr_jax.nets.initializers`` (the same values, bit for bit), side by side.

Every measurement runs in a fresh Python process with the persistent compilation cache off, so
each pays its compilations as a first run does; the two variants alternate, net by net.

    python scripts/bench_init.py [--nets mlp lenet5 vit] [--presets small paper] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SIZES = {"mlp": 28, "lenet_300_100": 28, "lenet5": 32, "lenet5_caffe": 28, "vit": 32, "mixer": 32}

CHILD = """
import json, sys, time
from flax import nnx
from bmr_jax.nets import create_net, initializers
name, size, preset, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if variant == "flax":  # the defaults these modules would use without our initialisers
    initializers.DENSE.update(kernel_init=nnx.initializers.lecun_normal(),
                              bias_init=nnx.initializers.zeros_init())
    initializers.NORM.update(scale_init=nnx.initializers.ones_init(),
                             bias_init=nnx.initializers.zeros_init())
    initializers.normal = nnx.initializers.normal
start = time.perf_counter()
create_net(name, 10, (size, size, 1), preset, rngs=nnx.Rngs(0))
print(json.dumps(time.perf_counter() - start))
"""


def build_seconds(name: str, preset: str, variant: str) -> float:
    env = {**os.environ, "BMR_JAX_COMPILATION_CACHE": "0"}
    done = subprocess.run([sys.executable, "-c", CHILD, name, str(SIZES[name]), preset, variant],
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(SIZES))
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print("| network | preset | Flax defaults (s) | bmr_jax.nets.initializers (s) | ratio |")
    print("|---|---|---|---|---|")
    totals = {"flax": 0.0, "ours": 0.0}
    for name in args.nets:
        for preset in args.presets:
            times = {"flax": [], "ours": []}
            for _ in range(args.rounds):
                for variant in ("flax", "ours"):
                    times[variant].append(build_seconds(name, preset, variant))
            flax, ours = (statistics.median(times[v]) for v in ("flax", "ours"))
            totals["flax"] += flax
            totals["ours"] += ours
            print(f"| {name} | {preset} | {flax:.2f} | {ours:.2f} | {flax / ours:.1f}x |",
                  flush=True)  # fmt: skip
    flax, ours = totals["flax"], totals["ours"]
    print(f"| all | | {flax:.1f} | {ours:.1f} | {flax / ours:.1f}x |")


if __name__ == "__main__":
    main()
