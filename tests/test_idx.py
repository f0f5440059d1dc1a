"""The IDX parser on the real MNIST / Fashion-MNIST files and on damaged copies."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from bmr_jax.data.idx import read_idx, write_idx
from bmr_jax.errors import CorruptDataFileError

# Class counts published with the datasets (MNIST: LeCun et al.; Fashion-MNIST: 6,000 / 1,000
# per class by construction).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_files(data_dir):
    images = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS
    assert images.max() == 255 and images.min() == 0


def test_write_then_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for array in (
        rng.integers(0, 256, (5, 3, 4), dtype=np.uint8),
        rng.integers(-100, 100, (7,), dtype=np.int8),
        rng.normal(size=(2, 3)).astype(np.float32),
        rng.normal(size=(4,)).astype(np.float64),
        rng.integers(-(2**31), 2**31 - 1, (3, 2), dtype=np.int32),
    ):
        path = tmp_path / "a.gz"
        write_idx(path, array)
        back = read_idx(path)
        assert back.dtype == array.dtype.newbyteorder("=") and np.array_equal(back, array)


def test_hand_made_header_is_parsed(tmp_path):
    # magic 0x00000801 (uint8, 1 dim), size 3, payload 7 8 9: written by hand, not by write_idx
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])))
    assert read_idx(path).tolist() == [7, 8, 9]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not gzip at all", "not a complete gzip file"),
        (gzip.compress(bytes([1, 2, 8, 1, 0, 0, 0, 3, 7, 8, 9])), "bad magic"),
        (gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 4, 7, 8, 9])), "holds 3 bytes"),
        (gzip.compress(bytes([0, 0, 8, 2, 0, 0])), "header is cut short"),
    ],
    ids=["not gzip", "bad magic", "short data", "short header"],  # gzip headers hold the time
)
def test_damaged_files_raise_one_line_errors(tmp_path, content, message):
    path = tmp_path / "damaged.gz"
    path.write_bytes(content)
    with pytest.raises(CorruptDataFileError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_real_file_is_corrupt(data_dir, tmp_path):
    blob = (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptDataFileError, match="not a complete gzip file"):
        read_idx(path)
