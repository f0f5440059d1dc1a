"""Per-channel standardisation and zero padding (METHOD.md section 6), by hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from bmr_jax.data import RawDataset, Split, channel_statistics, pad_images, prepare
from bmr_jax.errors import ShapeMismatchError


def _raw(train_images, test_images):
    return RawDataset(
        name="hand",
        train=Split(train_images, np.zeros(len(train_images), np.int32)),
        test=Split(test_images, np.zeros(len(test_images), np.int32)),
        num_classes=2,
        class_names=("a", "b"),
    )


def test_statistics_by_hand():
    # channel 0 holds 0 and 4 (mean 2, std 2); channel 1 holds 1 and 1 (mean 1, std 0)
    images = np.array([[[[0, 1]]], [[[4, 1]]]], dtype=np.uint8)
    mean, std = channel_statistics(images)
    np.testing.assert_allclose(mean, [2.0, 1.0])
    np.testing.assert_allclose(std, [2.0, 0.0])


def test_statistics_match_numpy_on_many_chunks():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20_000, 3, 2, 3), dtype=np.uint8)  # several 8192-image chunks
    mean, std = channel_statistics(images)
    np.testing.assert_allclose(mean, images.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, images.std(axis=(0, 1, 2)), rtol=1e-10)


def test_prepare_uses_training_statistics_for_both_splits():
    train = np.array([[[[0]]], [[[4]]]], dtype=np.uint8)  # mean 2, std 2
    test = np.array([[[[6]]]], dtype=np.uint8)
    ds = prepare(_raw(train, test))
    assert ds.train.images.ravel().tolist() == [-1.0, 1.0]
    assert ds.test.images.ravel().tolist() == [2.0]  # (6 - 2) / 2, not the test split's own
    assert ds.train.images.dtype == np.float32


def test_constant_channel_is_not_divided_by_zero():
    train = np.full((3, 2, 2, 1), 7, np.uint8)
    ds = prepare(_raw(train, train[:1]))
    assert np.all(ds.train.images == 0) and ds.channel_std.tolist() == [1.0]


def test_padding_places_the_image_in_the_centre():
    images = np.arange(1, 28 * 28 + 1, dtype=np.int32).reshape(1, 28, 28, 1).astype(np.uint16)
    padded = pad_images(images, 32)
    assert padded.shape == (1, 32, 32, 1)
    np.testing.assert_array_equal(padded[0, 2:30, 2:30], images[0])
    assert padded.sum() == images.sum()  # the border is zeros


def test_prepare_pads_raw_pixels_before_standardising():
    train = np.array([[[[0]]], [[[4]]]], dtype=np.uint8)  # 1x1 images, mean 2, std 2
    ds = prepare(_raw(train, train), image_size=3)
    assert ds.train.images.shape == (2, 3, 3, 1)
    # the zero-padded border is a raw 0, i.e. (0 - 2) / 2 = -1 after standardisation
    assert ds.train.images[1, 0, 0, 0] == -1.0 and ds.train.images[1, 1, 1, 0] == 1.0


def test_cannot_pad_to_a_smaller_size():
    with pytest.raises(ShapeMismatchError, match="cannot pad 28x28 images to 20x20"):
        pad_images(np.zeros((1, 28, 28, 1), np.uint8), 20)


def test_padding_black_or_zero_by_hand():
    # one 1x1 channel: training pixels 0 and 4 (mean 2, std 2); padded to 3x3
    train = np.array([[[[0]]], [[[4]]]], dtype=np.uint8)
    black = prepare(_raw(train, train), image_size=3, padding="black")
    zero = prepare(_raw(train, train), image_size=3, padding="zero")
    border = np.ones((3, 3), bool)
    border[1, 1] = False
    # black: the border is a black pixel standardised, (0 - 2) / 2; zero: it is 0
    np.testing.assert_array_equal(black.train.images[1, ..., 0][border], -1.0)
    np.testing.assert_array_equal(zero.train.images[1, ..., 0][border], 0.0)
    # the image itself is standardised the same way either way: (4 - 2) / 2
    assert black.train.images[1, 1, 1, 0] == zero.train.images[1, 1, 1, 0] == 1.0
    with pytest.raises(ValueError, match="padding"):
        prepare(_raw(train, train), image_size=3, padding="grey")


def test_a_validation_split_is_held_out_of_training_and_the_same_every_time():
    """``data.validation``: the held-out images come from the training split, are never
    trained on, replace the test split, and the standardisation uses the rest only."""
    from bmr_jax import data
    from bmr_jax.data import hold_out_validation, load_raw

    raw = load_raw("mnist_mini")
    split = hold_out_validation(raw, 1000)
    assert len(split.test) == 1000 and len(split.train) == len(raw.train) - 1000
    key = lambda images: {bytes(image) for image in images.reshape(len(images), -1)}  # noqa: E731
    original = key(raw.train.images)
    assert key(split.test.images) <= original and key(split.train.images) <= original
    assert not key(split.test.images) & key(split.train.images)
    assert key(split.test.images) != key(raw.train.images[-1000:])  # a random subset
    again = hold_out_validation(raw, 1000)
    np.testing.assert_array_equal(again.test.labels, split.test.labels)
    prepared = data.load("mnist_mini", validation=1000)
    mean = split.train.images.astype(np.float64).mean()
    assert prepared.channel_mean[0] == pytest.approx(mean, rel=1e-5)
    assert prepared.evaluated_on.startswith("validation") and data.load(
        "mnist_mini").evaluated_on == "test"  # fmt: skip
    with pytest.raises(ValueError, match="validation"):
        hold_out_validation(raw, len(raw.train))
