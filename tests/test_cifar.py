"""The CIFAR parser on tiny archives written here in the official format.

The official archives are tar.gz files of pickled dicts written by Python 2 (byte-string keys,
``data`` an ``(N, 3072)`` uint8 array with the red, green and blue planes one after the other).
Protocol-2 pickles with ``bytes`` keys reproduce that layout.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from bmr_jax import data
from bmr_jax.data.cifar import CIFAR10_LAYOUT, CIFAR100_LAYOUT, read_cifar_archive
from bmr_jax.data.registry import DatasetSpec, cifar_reader
from bmr_jax.errors import ChecksumMismatchError, CorruptDataFileError


def _planes(n: int, offset: int) -> np.ndarray:
    """Images whose pixel (i, j) of channel c in image k is (k + offset + c * 7 + i + 2 * j) % 256,
    in the official (N, 3072) layout."""
    k, c, i, j = np.ogrid[:n, :3, :32, :32]
    return ((k + offset + c * 7 + i + 2 * j) % 256).astype(np.uint8).reshape(n, 3072)


def _add(tar: tarfile.TarFile, name: str, obj) -> None:
    blob = pickle.dumps(obj, protocol=2) if not isinstance(obj, bytes) else obj
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def write_tiny_cifar10(path, per_batch=3, test=4, label_names=None):
    """Members in a scrambled order, as in the official archive."""
    folder = "cifar-10-batches-py"
    if label_names is None:
        label_names = [b"airplane", b"automobile"] + [b"x"] * 8
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, f"{folder}/test_batch", {b"data": _planes(test, 0), b"labels": list(range(test))})
        for b in (4, 1, 3, 5, 2):
            batch = {
                b"data": _planes(per_batch, 10 * b),
                b"labels": [(b + i) % 10 for i in range(per_batch)],
                b"batch_label": b"training batch",
            }
            _add(tar, f"{folder}/data_batch_{b}", batch)
        _add(tar, f"{folder}/readme.html", b"<html></html>")
        _add(tar, f"{folder}/batches.meta", {b"label_names": label_names})


def write_tiny_cifar100(path, train=5, test=2):
    with tarfile.open(path, "w:gz") as tar:
        folder = "cifar-100-python"
        _add(
            tar,
            f"{folder}/meta",
            {
                b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                b"coarse_label_names": [b"s"] * 20,
            },
        )
        _add(
            tar,
            f"{folder}/train",
            {
                b"data": _planes(train, 1),
                b"fine_labels": [99, 0, 5, 7, 42],
                b"coarse_labels": [0] * train,
            },
        )
        _add(
            tar,
            f"{folder}/test",
            {b"data": _planes(test, 2), b"fine_labels": [3, 98], b"coarse_labels": [1] * test},
        )


def test_cifar10_layout_and_pixels(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_tiny_cifar10(path)
    train_x, train_y, test_x, test_y, names = read_cifar_archive(path, CIFAR10_LAYOUT)
    assert train_x.shape == (15, 32, 32, 3) and train_x.dtype == np.uint8
    assert test_x.shape == (4, 32, 32, 3) and test_y.tolist() == [0, 1, 2, 3]
    assert train_y.dtype == np.int32 and train_y[:3].tolist() == [1, 2, 3]  # batch 1 first
    assert names[:2] == ("airplane", "automobile")
    # image 1 of batch 2 (row 4 of train), channel 2, row 5, column 9: (1 + 20 + 14 + 5 + 18)
    assert train_x[4, 5, 9, 2] == 1 + 20 + 14 + 5 + 18
    # first test image, green channel at (0, 1): 0 + 0 + 7 + 0 + 2
    assert test_x[0, 0, 1, 1] == 9


def test_cifar100_fine_labels(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    write_tiny_cifar100(path)
    train_x, train_y, test_x, test_y, names = read_cifar_archive(path, CIFAR100_LAYOUT)
    assert train_x.shape == (5, 32, 32, 3) and train_y.tolist() == [99, 0, 5, 7, 42]
    assert test_y.tolist() == [3, 98] and names[99] == "c99"
    assert test_x[1, 31, 31, 0] == (1 + 2 + 0 + 31 + 62) % 256


def test_registered_loader_on_tiny_archive(tmp_path, temporary_dataset):
    path = tmp_path / "tiny_cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    write_tiny_cifar10(path)
    real = data.get_dataset_spec("cifar10")
    temporary_dataset(
        DatasetSpec(
            name="tiny_cifar10",
            description="three images per batch",
            files=(data.DataFile(real.files[0].name, data.md5sum(path)),),
            read=cifar_reader(CIFAR10_LAYOUT),
            num_classes=10,
            image_shape=(32, 32, 3),
        )
    )
    ds = data.load("tiny_cifar10", data_dir=tmp_path)
    assert ds.train.images.shape == (15, 32, 32, 3) and ds.train.images.dtype == np.float32
    assert ds.channel_mean.shape == (3,)
    np.testing.assert_allclose(ds.train.images.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(ds.train.images.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_official_name_with_other_bytes_fails_the_published_checksum(tmp_path):
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    write_tiny_cifar10(path)
    with pytest.raises(ChecksumMismatchError, match="c58f30108f718f92721af3b95e74349a"):
        data.load_raw("cifar10", data_dir=tmp_path)


def test_truncated_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_tiny_cifar10(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CorruptDataFileError, match="not a complete tar.gz archive"):
        read_cifar_archive(path, CIFAR10_LAYOUT)


def test_missing_member(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    write_tiny_cifar10(path)  # the CIFAR-10 layout where CIFAR-100 is expected
    with pytest.raises(CorruptDataFileError, match="no member 'cifar-100-python/meta'"):
        read_cifar_archive(path, CIFAR100_LAYOUT)


def test_wrong_data_shape(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-100-python/meta", {b"fine_label_names": []})
        _add(
            tar,
            "cifar-100-python/train",
            {b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]},
        )
        _add(tar, "cifar-100-python/test", {b"data": _planes(1, 0), b"fine_labels": [0]})
    with pytest.raises(CorruptDataFileError, match=r"data has shape \(2, 100\)"):
        read_cifar_archive(path, CIFAR100_LAYOUT)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo should never run",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_tiny_cifar10(path, label_names=_RunsCode())
    with pytest.raises(CorruptDataFileError, match="is not allowed"):
        read_cifar_archive(path, CIFAR10_LAYOUT)
