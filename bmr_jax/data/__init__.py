"""Datasets: registry, verified downloads and caching, parsing, preprocessing.

Typical use::

    from bmr_jax import data
    ds = data.load("fashion_mnist", image_size=32)   # float32 NHWC, standardised per channel
    ds.train.images.shape                            # (60000, 32, 32, 1)

Files are looked up in ``data_dir`` / ``$BMR_JAX_DATA`` / the user cache folder (see
:mod:`bmr_jax.data.files`), verified against their published MD5 on every load, and
downloaded if missing. ``mnist_mini`` ships with the package and never needs the network.
"""

from __future__ import annotations

from bmr_jax.data.dataset import Dataset, RawDataset, Split, hold_out_validation
from bmr_jax.data.files import (
    DATA_DIR_ENV,
    OFFLINE_ENV,
    DataFile,
    default_data_dir,
    md5sum,
    resolve_data_dir,
)
from bmr_jax.data.preprocess import PADDINGS, channel_statistics, pad_images, prepare
from bmr_jax.data.registry import (
    DATASETS,
    DatasetSpec,
    fetch_dataset_files,
    get_dataset_spec,
    list_datasets,
    load_raw,
    register_dataset,
)

DEFAULT_DATASET = "mnist_mini"


def load(
    name: str = DEFAULT_DATASET,
    image_size: int | None = None,
    data_dir=None,
    download: bool | None = None,
    padding: str = "black",
    validation: int = 0,
) -> Dataset:
    """Loads dataset ``name`` ready for a network (see :func:`prepare`).

    Args:
      name: a registered dataset name (:func:`list_datasets`).
      image_size: zero-pad images to ``image_size x image_size`` (32 for LeNet-5, ViT, Mixer;
        a network's registry entry says what it wants).
      data_dir: data folder; default ``$BMR_JAX_DATA`` or the user cache folder.
      download: allow downloading missing files (default: yes unless ``BMR_JAX_OFFLINE=1``).
      padding: ``black`` (pad, then standardise) or ``zero`` (standardise, then pad: the
        reference code's order); see :func:`prepare`.
      validation: hold out this many training images as the split the dataset's ``test``
        holds (:func:`hold_out_validation`: a fixed random subset, never trained on; the
        test set itself is then not loaded into the result). 0: the official test split.
    """
    raw = hold_out_validation(load_raw(name, data_dir, download), validation)
    return prepare(raw, image_size, padding)


__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_DATASET",
    "OFFLINE_ENV",
    "PADDINGS",
    "DataFile",
    "Dataset",
    "DatasetSpec",
    "RawDataset",
    "Split",
    "channel_statistics",
    "default_data_dir",
    "fetch_dataset_files",
    "hold_out_validation",
    "get_dataset_spec",
    "list_datasets",
    "load",
    "load_raw",
    "md5sum",
    "pad_images",
    "prepare",
    "register_dataset",
    "resolve_data_dir",
]
