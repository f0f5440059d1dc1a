"""Preprocessing as in METHOD.md section 6: zero padding and per-channel standardisation."""

from __future__ import annotations

import numpy as np

from bmr_jax.data.dataset import Dataset, RawDataset, Split
from bmr_jax.errors import ShapeMismatchError

_CHUNK = 8192  # images per chunk when accumulating statistics (bounded float64 memory)


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of NHWC images, accumulated in float64."""
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].reshape(-1, channels).astype(np.float64)
        total += chunk.sum(axis=0)
        total_sq += np.einsum("nc,nc->c", chunk, chunk)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean, std


def pad_images(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pads NHWC images to ``size x size``, centred (extra row/column at the bottom/right).

    Padding is applied to the raw pixels, so the border has the value of the (black) background
    of MNIST-like images.
    """
    height, width = images.shape[1:3]
    if height > size or width > size:
        raise ShapeMismatchError(f"cannot pad {height}x{width} images to {size}x{size}")
    top, left = (size - height) // 2, (size - width) // 2
    widths = ((0, 0), (top, size - height - top), (left, size - width - left), (0, 0))
    return np.pad(images, widths)


PADDINGS = ("black", "zero")  # what the border of a padded image holds


def prepare(raw: RawDataset, image_size: int | None = None, padding: str = "black") -> Dataset:
    """Standardises a dataset per channel with its training statistics, optionally padding.

    ``x -> (x - mean_c) / std_c`` with ``mean_c, std_c`` taken over all training pixels of
    channel ``c`` of the unpadded images (METHOD.md section 6). With ``image_size`` (32 for the
    conv, ViT and Mixer networks) images are padded to that size, and ``padding`` says how:

    - ``"black"``: pad with black pixels, then standardise (the border holds a black pixel's
      standardised value, ``-mean_c / std_c``: -0.81 on Fashion-MNIST);
    - ``"zero"``: standardise, then pad with 0 (the reference code's order, METHOD.md 4.7).
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    mean, std = channel_statistics(raw.train.images)
    std = np.where(std > 0, std, 1.0)

    def transform(split: Split) -> Split:
        images = split.images
        pad = image_size is not None and images.shape[1:3] != (image_size, image_size)
        if pad and padding == "black":
            images = pad_images(images, image_size)
        scaled = (images.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
        if pad and padding == "zero":
            scaled = pad_images(scaled, image_size)
        return Split(scaled, split.labels)

    return Dataset(
        name=raw.name,
        train=transform(raw.train),
        test=transform(raw.test),
        num_classes=raw.num_classes,
        class_names=raw.class_names,
        evaluated_on=raw.evaluated_on,
        channel_mean=mean.astype(np.float32),
        channel_std=std.astype(np.float32),
    )
