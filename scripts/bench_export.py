"""What the export buys, side by side in one process: size, FLOPs and CPU latency of four
versions of a finished run's network.

- ``dense``: the network as trained, every weight stored and computed (posterior medians,
  pruned entries left at their tiny values);
- ``masked``: the same with the pruned entries set to zero (what mask-based pruning gives:
  same size, same compute);
- ``shrunk``: ``bmr_jax.export`` without the removed units, every layer dense;
- ``sparse``: the shrunk network with the dense layers that ``export`` measured faster as
  BCOO (``--sparse auto``), and the export folder's sparse storage on disk.

Bytes on disk: a safetensors file of the parameters (dense for the first three, the export's
encodings for ``sparse``). FLOPs per image: 2 x the kernel entries each layer multiplies, times
the positions it is applied at (``LayerSpec.positions``: output pixels of a convolution); a
sparse layer multiplies only its non-zero entries; activations, pooling and softmax are not
counted. Latency: the jitted forward pass on real test images, the versions timed in turn
within every round, medians. Agreement: each version's largest logit difference from the
masked network's on the first 1,000 test images, relative to the masked logits' largest
magnitude (the shrunk and sparse versions must agree to float tolerance).

    python scripts/bench_export.py RUN [RUN ...] [--rounds 30] [--json] [--record]

``--record`` writes each run's measurement into its folder (``speedup.json``), from which
``bmr-jax plot --figure speedup`` and ``bmr-jax report --speedup`` draw the structured frontier
(issue 36). The measurement states the machine's load average when it was taken.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import save as safetensors_bytes

from bmr_jax import export
from bmr_jax.bayes.layers import WEIGHT_MODULES, build_layer_view
from bmr_jax.export import archive
from bmr_jax.export.folder import compute_choices, parameters
from bmr_jax.export.sparse import to_sparse
from bmr_jax.export.timing import latencies
from bmr_jax.results.speedup import SPEEDUP_FILE
from bmr_jax.runs.experiment import load_dataset
from bmr_jax.runs.folder import atomic_write

VARIANTS = ("dense", "masked", "shrunk", "sparse")


def _masked(source):
    module = nnx.clone(source.module)
    view = build_layer_view(module, source.input_shape)
    params = nnx.state(module, nnx.Param)
    zeroed = {k: jnp.where(source.masks[k], v, 0.0) for k, v in view.matrices(params).items()
              if k in source.masks}  # fmt: skip
    nnx.update(module, view.write(params, zeroed))
    return module


def _flops(module, input_shape, sparse=()) -> int:
    """2 x the kernel entries each weight layer multiplies x the positions it is applied at
    (``LayerSpec.positions``); the layers named in ``sparse`` multiply their non-zero
    entries only."""
    view = build_layer_view(module, input_shape)
    kernels = {".".join(map(str, p)): m.kernel[...] for p, m in nnx.iter_modules(module)
               if isinstance(m, WEIGHT_MODULES)}  # fmt: skip
    total = 0
    for spec in view.layers:
        kernel = kernels[spec.name]
        entries = int(np.count_nonzero(kernel)) if spec.name in sparse else int(kernel.size)
        total += 2 * entries * spec.positions
    return total


def _sizes(module) -> tuple[int, int]:
    values = [np.asarray(v[...]) for _, v in nnx.to_flat_state(nnx.state(module, nnx.Param))]
    return sum(v.size for v in values), sum(int(np.count_nonzero(v)) for v in values)


def _agreement(modules: dict, images: np.ndarray) -> dict:
    """``max |logits - masked logits| / max |masked logits|`` of each version."""
    x = jnp.asarray(images[:1000])
    logits = {name: np.asarray(module(x), np.float64) for name, module in modules.items()}
    scale = np.abs(logits["masked"]).max()
    return {name: float(np.abs(v - logits["masked"]).max() / scale) for name, v in logits.items()}


def bench(run: str, rounds: int) -> dict:
    source = export.read_run(run)
    config = source.config
    exported = export.export_network(source.module, source.input_shape, source.masks,
                                     net=config.net.name, preset=config.net.preset,
                                     num_classes=source.num_classes,
                                     sequential=source.sequential)  # fmt: skip
    choices = compute_choices(exported.module, "auto", 1000, exported.architecture["layers"])
    sparse_names = [c.name for c in choices if c.sparse]
    sparse = to_sparse(nnx.clone(exported.module), sparse_names)
    modules = {"dense": source.module, "masked": _masked(source), "shrunk": exported.module,
               "sparse": sparse}  # fmt: skip
    stored = {name: len(safetensors_bytes(parameters(m))) for name, m in modules.items()}
    stored["sparse"] = sum(sum(a.nbytes for a in archive.encode(k, v)[1].values())
                           for k, v in parameters(exported.module).items())  # fmt: skip
    images = load_dataset(config).test.images
    latency = {b: latencies(modules, images, b, rounds) for b in (1, 1000)}
    agreement = _agreement(modules, images)
    flops = {name: _flops(modules[name], source.input_shape) for name in VARIANTS[:3]}
    flops["sparse"] = _flops(exported.module, source.input_shape, sparse_names)
    rows = {}
    for name, module in modules.items():
        count, nonzero = _sizes(module)
        rows[name] = {"parameters": count, "nonzero": nonzero, "bytes": stored[name],
                      "flops": flops[name],
                      "latency_1": latency[1][name], "latency_1000": latency[1000][name],
                      "agreement": agreement[name]}  # fmt: skip
    widths = [s.rows for s in build_layer_view(exported.module, source.input_shape).layers]
    return {"run": run, "net": config.net.name, "method": config.method,
            "units": "-".join(map(str, widths[:-1])), "rounds": rounds,
            "load_average": os.getloadavg()[0], "device": jax.devices()[0].device_kind,
            "compute": [c.line() for c in choices], "variants": rows}  # fmt: skip


def _table(result: dict) -> str:
    rows = result["variants"]
    dense = rows["dense"]
    lines = [f"{result['net']} ({result['method']}, {result['run']})", "",
             "| version | parameters | non-zero | bytes on disk | kFLOPs / image | batch 1 (ms) "
             "| batch 1000 (ms) | FLOP reduction | speed-up at 1000 | smaller file "
             "| logits vs masked |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in VARIANTS:
        r = rows[name]
        speed_up = dense["latency_1000"] / r["latency_1000"]
        lines.append(
            f"| {name} | {r['parameters']:,} | {r['nonzero']:,} | {r['bytes']:,} | "
            f"{r['flops'] / 1e3:,.1f} | {r['latency_1'] * 1e3:.3f} | {r['latency_1000'] * 1e3:.2f} "
            f"| {dense['flops'] / r['flops']:.2f}x | {speed_up:.2f}x "
            f"| {dense['bytes'] / r['bytes']:.1f}x | {r['agreement']:.1e} |"
        )
    return "\n".join([*lines, "", *(f"- {line}" for line in result["compute"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (median)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--record", action="store_true",
                        help=f"write each run's measurement into its folder ({SPEEDUP_FILE}: "
                             "what bmr-jax plot --figure speedup and report --speedup read)")
    args = parser.parse_args()
    results = []
    for run in args.runs:
        results.append(bench(run, args.rounds))
        if args.record:
            atomic_write(Path(run) / SPEEDUP_FILE, json.dumps(results[-1], indent=1).encode())
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("\n\n".join(_table(r) for r in results))


if __name__ == "__main__":
    main()
