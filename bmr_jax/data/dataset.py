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
    evaluated_on: str = "test"  # what ``test`` holds: the test split, or a held-out validation

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


VALIDATION_SEED = 0x5A11D  # one split per dataset, the same for every run seed


def hold_out_validation(raw: RawDataset, count: int) -> RawDataset:
    """``raw`` with ``count`` training images held out as the split a run evaluates on.

    The held-out images are a random subset drawn with a fixed seed (:data:`VALIDATION_SEED`),
    so every run of every seed and method sees the same split; they replace ``test`` (so that
    choices of a schedule or a rate made on a run's metrics never touch the test set) and are
    removed from ``train`` (so that the standardisation statistics and the training never see
    them). ``count = 0`` returns ``raw`` unchanged.
    """
    if count == 0:
        return raw
    n = len(raw.train)
    if not 0 < count < n:
        raise ValueError(f"validation: expected 0 <= count < {n} training images, got {count}")
    order = np.random.default_rng(VALIDATION_SEED).permutation(n)
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    return RawDataset(
        name=raw.name,
        train=Split(raw.train.images[kept], raw.train.labels[kept]),
        test=Split(raw.train.images[held], raw.train.labels[held]),
        num_classes=raw.num_classes,
        class_names=raw.class_names,
        evaluated_on=f"validation ({count} training images held out)",
    )
