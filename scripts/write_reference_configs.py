"""Writes configs/ for the paper's reference grid (METHOD.md section 6) and the MNIST anchors.

One small file per (dataset, network, method); everything shared lives in
configs/reference.yaml (the reference code's choices, METHOD.md 4.7) and the configs/base.yaml it
includes (the schedule). Rerun after changing the grid:

    python scripts/write_reference_configs.py
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASETS = ("fashion_mnist", "cifar10", "cifar100")
NETS = ("mlp", "lenet5", "vit", "mixer")
METHODS = ("flat_map", "flat_ff", "tiered_ff", "bmr_ss", "bmr_rhs")
ANCHORS = ("lenet_300_100", "lenet5_caffe")  # MNIST, BMR-S&S (REFERENCE_RESULTS.md B)


def write(path: Path, dataset: str, net: str, method: str, comment: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# {comment}\n"
        "defaults: [../reference.yaml]\n"
        f"method: {method}\n"
        f"data: {{name: {dataset}}}\n"
        f"net: {{name: {net}, preset: paper}}\n"
    )


def main() -> None:
    for dataset in DATASETS:
        for net in NETS:
            for method in METHODS:
                write(CONFIGS / dataset / f"{net}-{method}.yaml", dataset, net, method,
                      f"Reference grid: {method} on {dataset} with the paper's {net}.")  # fmt: skip
    for net in ANCHORS:
        comment = f"MNIST anchor: BMR-S&S on {net} (compare Sparse VD, REFERENCE_RESULTS.md B)."
        write(CONFIGS / "mnist" / f"{net}-bmr_ss.yaml", "mnist", net, "bmr_ss", comment)


if __name__ == "__main__":
    main()
