"""Dataset containers: images as NHWC arrays with integer labels, split into train and test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    Attributes:
      images: ``(N, H, W, C)`` array (``uint8`` as stored, ``float32`` once prepared).
      labels: ``(N,)`` ``int32`` class indices.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, H, W, C), got shape {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"{self.images.shape[0]} images but labels of shape {self.labels.shape}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class RawDataset:
    """A dataset exactly as its files hold it: ``uint8`` NHWC images and ``int32`` labels."""

    name: str
    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.train.images.shape[1:])


@dataclass(frozen=True)
class Dataset(RawDataset):
    """A dataset ready for a network: ``float32`` images standardised per channel.

    Attributes:
      channel_mean, channel_std: the training-set statistics (``(C,)``, in raw pixel units)
        used to standardise both splits; keep them to preprocess new inputs the same way.
    """

    channel_mean: np.ndarray = None  # type: ignore[assignment]
    channel_std: np.ndarray = None  # type: ignore[assignment]
