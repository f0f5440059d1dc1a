"""Where a finished run's non-zero weights are: each layer's count after pruning, with the
weights of dead units counted as zero (``bmr_jax.bmr.reduce.propagate_dead_units``, the
count behind the frontier's compression).

    python scripts/nonzero_by_layer.py RUN [RUN ...]

One Markdown row per run: the non-zero weights (biases included) of each layer, the
classifier's share of them, and the compression they give. By default BMR does not prune
the last layer (METHOD.md 4.4: "The last layer is not pruned"), so at high compression its
classifier's weights of living units are a large part of what is left; Sparse VD prunes
every layer, and so does BMR under ``bmr.prune_classifier``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bmr_jax.bmr.reduce import propagate_dead_units
from bmr_jax.errors import BmrJaxError
from bmr_jax.export.from_run import restore_run


def nonzero_by_layer(masks, view, sequential: bool) -> dict[str, int]:
    """``{layer: non-zero weights}``, dead units' weights counted as zero."""
    masks = {layer: np.asarray(mask) for layer, mask in masks.items()}
    effective = propagate_dead_units(masks, view) if sequential else masks
    return {layer: int(np.sum(mask)) for layer, mask in effective.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    header = None
    for path in args.runs:
        try:
            run = restore_run(path)
        except BmrJaxError as error:
            print(f"nonzero_by_layer: {error}", file=sys.stderr)
            return 2
        view = run.setup.bnet.view
        counts = nonzero_by_layer(run.state.masks, view, run.setup.sequential)
        total = sum(int(np.asarray(m).size) for m in run.state.masks.values())
        last = next(spec.name for spec in view.bayesian_layers if spec.is_last)
        if header is None:
            header = list(counts)
            print("| run | " + " | ".join(header) + " | classifier share | compression |")
            print("|---|" + "---|" * (len(header) + 2))
        kept = sum(counts.values())
        cells = " | ".join(str(counts[layer]) for layer in header)
        print(f"| {run.config.method} seed {run.config.seed} | {cells} | "
              f"{counts[last] / kept:.2f} | {total / kept:.1f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
