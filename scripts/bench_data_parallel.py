"""Data-parallel SVI scaling: steps per second against the number of devices.

Each device count runs in its own child process (``XLA_FLAGS=
--xla_force_host_platform_device_count=N`` on CPU, where the "devices" share the machine's
cores; on a GPU/TPU host the real devices are used, ``--devices`` chooses how many). Same
network, data and global batch in every process; median step time after compilation.

    python scripts/bench_data_parallel.py --net lenet5 --devices 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    import statistics
    import time

    import jax

    from bmr_jax import data, methods, nets
    from bmr_jax.inference import parallel

    devices = jax.devices()[: args.child]
    ds = data.load("fashion_mnist", image_size=nets.get_net_spec(args.net).image_size)
    mesh = parallel.data_mesh(devices) if args.child > 1 else None
    setup = methods.build("flat_ff", ds, net=args.net, preset=args.preset,
                          train=methods.TrainSettings(batch_size=args.batch), mesh=mesh)
    trainer, gamma = setup.trainer, setup.bnet.full_gamma()
    state = trainer.init()
    for i in range(3):
        state, loss = trainer.step(jax.random.key(i), state, gamma)
    loss.block_until_ready()
    times = []
    for i in range(args.steps):
        start = time.perf_counter()
        state, loss = trainer.step(jax.random.key(i), state, gamma)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    print(json.dumps({"devices": args.child, "platform": devices[0].platform,
                      "step_seconds": statistics.median(times)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="lenet5")
    parser.add_argument("--preset", default="paper", choices=("paper", "small"))
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("BMR_JAX_DATA", str(REPO_ROOT.parent / "shared" / "data"))
    if args.child:
        child(args)
        return
    rows = []
    for n in args.devices:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        if "cuda" not in os.environ.get("JAX_PLATFORMS", "") and n > 1:
            env["XLA_FLAGS"] = (
                f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
            )
        command = [sys.executable, __file__, "--net", args.net, "--preset", args.preset,
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--child", str(n)]  # fmt: skip
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.splitlines()[-1]))
    base = rows[0]["step_seconds"]
    print(f"{args.net} ({args.preset}), Flat-FF, global batch {args.batch}, {rows[0]['platform']}")
    print("| devices | ms / step | steps / s | speed-up |")
    print("|---|---|---|---|")
    for r in rows:
        s = r["step_seconds"]
        print(f"| {r['devices']} | {1000 * s:.2f} | {1 / s:.1f} | {base / s:.2f}x |")


if __name__ == "__main__":
    main()
