"""Parser for the official CIFAR-10 / CIFAR-100 "python version" archives.

Format (https://www.cs.toronto.edu/~kriz/cifar.html): a ``.tar.gz`` whose members are
pickled dicts (written by Python 2) with ``data``, a ``uint8`` array of shape ``(N, 3072)``
holding each image as 1024 red, 1024 green then 1024 blue values in row-major order, and
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). Class names are in the meta member.

The pickles are read with an unpickler that only accepts the NumPy array constructors the
format needs, so a doctored archive cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmr_jax.errors import CorruptDataFileError


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant keeps its members and labels inside the archive."""

    folder: str
    train_members: tuple[str, ...]
    test_member: str
    meta_member: str
    label_key: str
    names_key: str


CIFAR10_LAYOUT = CifarLayout(
    folder="cifar-10-batches-py",
    train_members=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_member="test_batch",
    meta_member="batches.meta",
    label_key="labels",
    names_key="label_names",
)
CIFAR100_LAYOUT = CifarLayout(
    folder="cifar-100-python",
    train_members=("train",),
    test_member="test",
    meta_member="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
)

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in CIFAR data")
        return super().find_class(module, name)


def _as_text(key):
    return key.decode("latin1") if isinstance(key, bytes) else key


def _unpickle(blob: bytes, member: str, path: Path) -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        message = f"{path}: member {member!r} is not a valid pickle ({e})"
        raise CorruptDataFileError(message) from None
    if not isinstance(obj, dict):
        raise CorruptDataFileError(f"{path}: member {member!r} does not hold a dict")
    return {_as_text(k): v for k, v in obj.items()}


def _read_members(path: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of the named members, read in one sequential pass over the gzip stream (the
    official archives do not store their members in the order we need them)."""
    wanted, blobs = set(names), {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    blobs[info.name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise CorruptDataFileError(f"{path}: not a complete tar.gz archive ({e})") from None
    for name in names:
        if name not in blobs:
            raise CorruptDataFileError(f"{path}: archive has no member {name!r}")
    return blobs


def _images_and_labels(batch: dict, layout: CifarLayout, member: str, path: Path):
    if "data" not in batch or layout.label_key not in batch:
        raise CorruptDataFileError(
            f"{path}: member {member!r} lacks 'data' or {layout.label_key!r}"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[layout.label_key], dtype=np.int32)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptDataFileError(
            f"{path}: member {member!r} data has shape {data.shape} and dtype {data.dtype}, "
            f"expected (N, 3072) uint8"
        )
    if labels.shape != (data.shape[0],):
        raise CorruptDataFileError(
            f"{path}: member {member!r} has {data.shape[0]} images but {labels.size} labels"
        )
    # (N, 3072) as [R(32x32), G(32x32), B(32x32)] -> NHWC
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar_archive(path: str | Path, layout: CifarLayout):
    """Reads a CIFAR python archive.

    Returns:
      ``(train_images, train_labels, test_images, test_labels, class_names)`` with NHWC
      ``uint8`` images and ``int32`` labels.

    Raises:
      CorruptDataFileError: unreadable archive, missing member, or inconsistent contents.
    """
    path = Path(path)
    members = [layout.meta_member, *layout.train_members, layout.test_member]
    blobs = _read_members(path, [f"{layout.folder}/{m}" for m in members])
    batches = {m: _unpickle(blobs[f"{layout.folder}/{m}"], m, path) for m in members}
    meta = batches[layout.meta_member]
    train = [_images_and_labels(batches[m], layout, m, path) for m in layout.train_members]
    test = _images_and_labels(batches[layout.test_member], layout, layout.test_member, path)
    names = tuple(_as_text(n) for n in meta.get(layout.names_key, ()))
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return train_images, train_labels, test[0], test[1], names
