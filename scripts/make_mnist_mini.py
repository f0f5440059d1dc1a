"""Builds the embedded ``mnist_mini`` dataset from the official MNIST files.

The subset is the first 10,000 training and the first 2,000 test images (with their labels)
of the official files, written in the same IDX gzip format and file names, with a gzip header
free of time stamps so the output is byte-for-byte reproducible. Prints the MD5 of each file
for the registry (bmr_jax/data/registry.py).

    BMR_JAX_DATA=../shared/data python scripts/make_mnist_mini.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bmr_jax.data import load_raw, md5sum
from bmr_jax.data.idx import write_idx

TRAIN_SIZE, TEST_SIZE = 10_000, 2_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (official files)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "bmr_jax" / "data" / "mnist_mini"
    )
    args = parser.parse_args()
    mnist = load_raw("mnist", data_dir=args.data_dir, download=False)
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": mnist.train.images[:TRAIN_SIZE, ..., 0],
        "train-labels-idx1-ubyte.gz": mnist.train.labels[:TRAIN_SIZE].astype("uint8"),
        "t10k-images-idx3-ubyte.gz": mnist.test.images[:TEST_SIZE, ..., 0],
        "t10k-labels-idx1-ubyte.gz": mnist.test.labels[:TEST_SIZE].astype("uint8"),
    }
    for name, array in arrays.items():
        path = args.out / name
        write_idx(path, array)
        print(f"{name}  {md5sum(path)}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
