"""The dataset registry: name -> how to find, verify and read the files.

Datasets registered here: ``mnist_mini`` (the embedded default, shipped with the package),
``mnist``, ``fashion_mnist``, ``cifar10`` and ``cifar100``. Users add their own with
:func:`register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmr_jax.data.cifar import CIFAR10_LAYOUT, CIFAR100_LAYOUT, CifarLayout, read_cifar_archive
from bmr_jax.data.dataset import RawDataset, Split
from bmr_jax.data.files import DataFile, fetch_file, resolve_data_dir
from bmr_jax.data.idx import read_idx
from bmr_jax.errors import CorruptDataFileError
from bmr_jax.registry import Registry

EMBEDDED_DIR = Path(__file__).parent


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to obtain one dataset.

    Attributes:
      name: registry name; also the dataset's folder inside the data folder.
      description: one line for ``bmr-jax datasets list``.
      files: the published files, with checksums and download sources.
      read: ``read(spec, paths) -> RawDataset`` where ``paths`` maps file names to verified
        local paths.
      num_classes: number of classes.
      image_shape: ``(H, W, C)`` as stored.
      class_names: human-readable class names (may be empty: the reader may supply them).
      embedded: the files ship inside the package instead of the data folder.
    """

    name: str
    description: str
    files: tuple[DataFile, ...]
    read: Callable[[DatasetSpec, Mapping[str, Path]], RawDataset]
    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...] = ()
    embedded: bool = False

    def folder(self, data_dir=None) -> Path:
        """The folder that holds (or will hold) this dataset's files."""
        if self.embedded:
            return EMBEDDED_DIR / self.name
        return resolve_data_dir(data_dir) / self.name


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec, *, overwrite: bool = False) -> DatasetSpec:
    """Adds ``spec`` to the registry (``overwrite=True`` to replace an existing name)."""
    return DATASETS.register(spec.name, spec, overwrite=overwrite)


def list_datasets() -> list[str]:
    """Registered dataset names, in registration order."""
    return DATASETS.names()


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``; :class:`UnknownNameError` if there is none."""
    return DATASETS.get(name)


def fetch_dataset_files(name: str, data_dir=None, download: bool | None = None) -> dict[str, Path]:
    """Verified local paths of every file of dataset ``name``, downloading missing ones."""
    spec = get_dataset_spec(name)
    folder = spec.folder(data_dir)
    return {f.name: fetch_file(folder, f, download=download) for f in spec.files}


def load_raw(name: str, data_dir=None, download: bool | None = None) -> RawDataset:
    """Loads dataset ``name`` exactly as stored (``uint8`` NHWC images, ``int32`` labels)."""
    spec = get_dataset_spec(name)
    return spec.read(spec, fetch_dataset_files(name, data_dir, download))


# --------------------------------------------------------------------------- readers


def _labels(array: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    if array.ndim != 1 or array.size == 0:
        raise CorruptDataFileError(f"{path}: expected a vector of labels, got shape {array.shape}")
    if array.min() < 0 or array.max() >= num_classes:
        raise CorruptDataFileError(
            f"{path}: labels range over [{array.min()}, {array.max()}], "
            f"expected [0, {num_classes - 1}]"
        )
    return array.astype(np.int32)


def _idx_split(spec: DatasetSpec, paths: Mapping[str, Path], images: str, labels: str) -> Split:
    image_array = read_idx(paths[images])
    if image_array.ndim != 3 or image_array.dtype != np.uint8:
        raise CorruptDataFileError(
            f"{paths[images]}: expected (N, H, W) uint8 images, got {image_array.shape} "
            f"{image_array.dtype}"
        )
    label_array = _labels(read_idx(paths[labels]), spec.num_classes, paths[labels])
    if label_array.shape[0] != image_array.shape[0]:
        raise CorruptDataFileError(
            f"{paths[labels]}: {label_array.shape[0]} labels for {image_array.shape[0]} images "
            f"in {paths[images].name}"
        )
    return Split(image_array[..., None], label_array)


def read_idx_dataset(spec: DatasetSpec, paths: Mapping[str, Path]) -> RawDataset:
    """Reader for the four-file IDX layout of MNIST and Fashion-MNIST."""
    return RawDataset(
        name=spec.name,
        train=_idx_split(spec, paths, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        test=_idx_split(spec, paths, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        num_classes=spec.num_classes,
        class_names=spec.class_names,
    )


def cifar_reader(layout: CifarLayout):
    """Reader for a CIFAR python archive laid out as ``layout``."""

    def read(spec: DatasetSpec, paths: Mapping[str, Path]) -> RawDataset:
        (path,) = paths.values()
        train_x, train_y, test_x, test_y, names = read_cifar_archive(path, layout)
        for labels in (train_y, test_y):
            _labels(labels, spec.num_classes, path)
        return RawDataset(
            name=spec.name,
            train=Split(train_x, train_y),
            test=Split(test_x, test_y),
            num_classes=spec.num_classes,
            class_names=names or spec.class_names,
        )

    return read


# --------------------------------------------------------------------------- the registry

_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_files(md5s: tuple[str, ...], mirrors: tuple[str, ...]) -> tuple[DataFile, ...]:
    return tuple(
        DataFile(name, md5, tuple(m + name for m in mirrors))
        for name, md5 in zip(_IDX_NAMES, md5s, strict=True)
    )


DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# mnist_mini: the first 10,000 training and first 2,000 test images of the official MNIST
# files, written by scripts/make_mnist_mini.py. Same file names and format as MNIST.
register_dataset(
    DatasetSpec(
        name="mnist_mini",
        description="embedded default: first 10,000 train / 2,000 test images of MNIST",
        files=_idx_files(
            (
                "5eed659afb5e1b375a6445caa2ea25ba",
                "fa5954be76dca5f1824dc4df3b91171c",
                "09c79b00154406ecac924b6584731486",
                "1015304e6ad525423be345e91f3ffe78",
            ),
            (),
        ),
        read=read_idx_dataset,
        num_classes=10,
        image_shape=(28, 28, 1),
        class_names=DIGITS,
        embedded=True,
    )
)
register_dataset(
    DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, 60,000 train / 10,000 test, 28x28x1",
        files=_idx_files(
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
            (
                "https://yann.lecun.com/exdb/mnist/",
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ),
        ),
        read=read_idx_dataset,
        num_classes=10,
        image_shape=(28, 28, 1),
        class_names=DIGITS,
    )
)
register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        description="Fashion-MNIST (Zalando), 60,000 train / 10,000 test, 28x28x1",
        files=_idx_files(
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ),
        read=read_idx_dataset,
        num_classes=10,
        image_shape=(28, 28, 1),
        class_names=FASHION_CLASSES,
    )
)
register_dataset(
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10, 50,000 train / 10,000 test, 32x32x3, 10 classes",
        files=(
            DataFile(
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            ),
        ),
        read=cifar_reader(CIFAR10_LAYOUT),
        num_classes=10,
        image_shape=(32, 32, 3),
    )
)
register_dataset(
    DatasetSpec(
        name="cifar100",
        description="CIFAR-100 (fine labels), 50,000 train / 10,000 test, 32x32x3, 100 classes",
        files=(
            DataFile(
                "cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
                ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            ),
        ),
        read=cifar_reader(CIFAR100_LAYOUT),
        num_classes=100,
        image_shape=(32, 32, 3),
    )
)
