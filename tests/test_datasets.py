"""Dataset registry and loaders on the real files: shapes, dtypes, labels, checksums."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bmr_jax import data
from bmr_jax.errors import ChecksumMismatchError, MissingDataFileError, UnknownNameError
from tests.test_idx import MNIST_TEST_COUNTS, MNIST_TRAIN_COUNTS


@pytest.fixture(scope="module")
def mnist():
    return data.load_raw("mnist")


def test_registry_names():
    assert data.list_datasets() == ["mnist_mini", "mnist", "fashion_mnist", "cifar10", "cifar100"]
    assert data.DEFAULT_DATASET == "mnist_mini"


def test_mnist(mnist):
    assert mnist.train.images.shape == (60000, 28, 28, 1)
    assert mnist.test.images.shape == (10000, 28, 28, 1)
    assert mnist.train.images.dtype == np.uint8 and mnist.train.labels.dtype == np.int32
    assert np.bincount(mnist.train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.test.labels).tolist() == MNIST_TEST_COUNTS
    assert mnist.num_classes == 10 and mnist.image_shape == (28, 28, 1)


def test_fashion_mnist():
    ds = data.load_raw("fashion_mnist")
    assert ds.train.images.shape == (60000, 28, 28, 1)
    assert ds.test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.train.labels).tolist() == [6000] * 10
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and len(ds.class_names) == 10


def test_mnist_mini_is_the_documented_subset_of_mnist(mnist):
    mini = data.load_raw("mnist_mini")
    assert len(mini.train) == 10_000 and len(mini.test) == 2_000
    np.testing.assert_array_equal(mini.train.images, mnist.train.images[:10_000])
    np.testing.assert_array_equal(mini.train.labels, mnist.train.labels[:10_000])
    np.testing.assert_array_equal(mini.test.images, mnist.test.images[:2_000])
    np.testing.assert_array_equal(mini.test.labels, mnist.test.labels[:2_000])
    # every class is represented well enough for a classifier
    assert np.bincount(mini.train.labels).min() > 800


def test_mnist_mini_needs_no_data_folder(tmp_path):
    ds = data.load("mnist_mini", data_dir=tmp_path / "empty", download=False)
    assert ds.train.images.shape == (10_000, 28, 28, 1)


def test_embedded_package_data_is_small():
    folder = data.get_dataset_spec("mnist_mini").folder()
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 3 * 2**20


def test_load_prepares_for_the_network():
    ds = data.load("mnist_mini", image_size=32)
    assert ds.train.images.shape == (10_000, 32, 32, 1)
    assert ds.train.images.dtype == np.float32
    # standardised with the statistics of the unpadded training pixels (MNIST: 0.1307, 0.3081)
    np.testing.assert_allclose(ds.channel_mean / 255, [0.1307], atol=2e-3)
    np.testing.assert_allclose(ds.channel_std / 255, [0.3081], atol=2e-3)


def test_unknown_dataset_name():
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnits'; known: cifar10"):
        data.load("mnits")


def _copy_mnist(data_dir, tmp_path):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    return tmp_path


def test_corrupted_copy_fails_its_checksum_and_is_not_used(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path)
    path = folder / "mnist" / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ChecksumMismatchError) as info:
        data.load_raw("mnist", data_dir=folder)
    message = str(info.value)
    assert str(path) in message and "ec29112dd5afa0611ce80d1b7f02629c" in message
    assert "\n" not in message
    # still refused with downloads allowed: a corrupt cached file is never silently used
    with pytest.raises(ChecksumMismatchError):
        data.load_raw("mnist", data_dir=folder, download=True)


def test_truncated_copy_fails_its_checksum(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path)
    path = folder / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ChecksumMismatchError, match="train-images-idx3-ubyte.gz"):
        data.load_raw("mnist", data_dir=folder)


def test_missing_file_with_downloads_off(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path)
    (folder / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(MissingDataFileError, match="t10k-images-idx3-ubyte.gz: file is missing"):
        data.load_raw("mnist", data_dir=folder)


def test_data_dir_precedence(monkeypatch, tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "arg").mkdir()
    monkeypatch.setenv("BMR_JAX_DATA", str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_dir() == tmp_path / "env"
    monkeypatch.setenv("BMR_JAX_DATA", str(tmp_path / "typo"))
    with pytest.raises(MissingDataFileError, match="the data folder .BMR_JAX_DATA. does not"):
        data.resolve_data_dir()  # the environment must name an existing folder
    assert data.resolve_data_dir(tmp_path / "new") == tmp_path / "new"  # the API's: made later
    monkeypatch.delenv("BMR_JAX_DATA")
    assert data.resolve_data_dir() == data.default_data_dir().resolve()


def _write_idx_dataset(folder, train_labels, test_images=3):
    from bmr_jax.data.idx import write_idx

    folder.mkdir(parents=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((4, 2, 2), np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.asarray(train_labels, np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((test_images, 2, 2), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    names = sorted(p.name for p in folder.iterdir())
    return tuple(data.DataFile(n, data.md5sum(folder / n)) for n in names)


@pytest.mark.parametrize(
    "train_labels, test_images, message",
    [
        ([0, 1, 2, 9], 3, r"labels range over \[0, 9\], expected \[0, 2\]"),
        ([0, 1, 2, 1], 5, "3 labels for 5 images in t10k-images-idx3-ubyte.gz"),
    ],
)
def test_inconsistent_idx_dataset(tmp_path, temporary_dataset, train_labels, test_images, message):
    from bmr_jax.data.registry import DatasetSpec, read_idx_dataset
    from bmr_jax.errors import CorruptDataFileError

    files = _write_idx_dataset(tmp_path / "three_classes", train_labels, test_images)
    temporary_dataset(
        DatasetSpec("three_classes", "hand-made", files, read_idx_dataset, 3, (2, 2, 1))
    )
    with pytest.raises(CorruptDataFileError, match=message):
        data.load_raw("three_classes", data_dir=tmp_path)
