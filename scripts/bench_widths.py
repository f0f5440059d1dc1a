"""What a narrower LeNet-5-Caffe buys on this CPU: latency of LeNet-5-Caffe at several widths,
side by side in one process (``bmr_jax.export.timing``), on real MNIST test images.

The widths are what a structured method may leave (conv1-conv2-dense; the classifier keeps its
10 outputs). The table gives FLOPs (2 x kernel entries x positions) and the measured speed-up
over the full 20-50-500 network at batch 1 and 1000, i.e. which widths a speed-up goal needs.

    python scripts/bench_widths.py [--rounds 30] [--widths 20-50-500 10-25-250 ...]
"""

from __future__ import annotations

import argparse

from flax import nnx

from bmr_jax import data
from bmr_jax.bayes.layers import build_layer_view
from bmr_jax.export.timing import latencies
from bmr_jax.nets.lenet import LeNet, LeNetConfig

DEFAULT = ("20-50-500", "20-25-250", "10-25-250", "20-13-82", "17-20-88", "10-13-100",
           "5-15-100", "3-18-284", "5-10-50", "3-8-40")  # fmt: skip


def network(widths: str) -> LeNet:
    conv1, conv2, dense = map(int, widths.split("-"))
    config = LeNetConfig(conv=(conv1, conv2), dense=(dense,), activation="relu", pooling="max")
    return LeNet(config, 10, (28, 28, 1), rngs=nnx.Rngs(0), name=widths)


def flops(module) -> int:
    view = build_layer_view(module, (28, 28, 1))
    return sum(2 * s.rows * s.fan_in * s.positions for s in view.layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--widths", nargs="+", default=DEFAULT)
    args = parser.parse_args()
    images = data.load("mnist").test.images
    modules = {w: network(w) for w in args.widths}
    timed = {b: latencies(modules, images, b, args.rounds) for b in (1, 1000)}
    full = args.widths[0]
    print("| widths | kFLOPs / image | FLOP reduction | batch 1 (ms) | batch 1000 (ms) | "
          "speed-up b=1 | speed-up b=1000 |\n|---|---|---|---|---|---|---|")
    for w, module in modules.items():
        print(f"| {w} | {flops(module) / 1e3:,.1f} | {flops(modules[full]) / flops(module):.2f}x | "
              f"{timed[1][w] * 1e3:.3f} | {timed[1000][w] * 1e3:.2f} | "
              f"{timed[1][full] / timed[1][w]:.2f}x | {timed[1000][full] / timed[1000][w]:.2f}x |")


if __name__ == "__main__":
    main()
