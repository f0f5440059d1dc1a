"""On-device epoch batching."""

import jax
import numpy as np
import pytest

from bmr_jax.inference.batches import EpochBatches


def test_each_epoch_is_a_permutation_and_epochs_differ():
    batches = EpochBatches(10, 3, jax.random.key(0))
    epochs = []
    for _ in range(2):
        seen = [np.asarray(order[i]) for order, i in (batches.next() for _ in range(3))]
        epochs.append(np.concatenate(seen))
    for epoch in epochs:
        assert len(set(epoch.tolist())) == 9 and set(epoch.tolist()) <= set(range(10))
    assert not np.array_equal(epochs[0], epochs[1])


def test_peek_does_not_advance_or_reshuffle():
    batches = EpochBatches(10, 5, jax.random.key(1))
    order, i = batches.peek()
    again, j = batches.peek()
    taken, k = batches.next()
    assert i == j == k == 0 and np.array_equal(order, again) and np.array_equal(order, taken)
    assert batches.next()[1] == 1 and batches.position == 2


def test_batch_size_checked():
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 4\]"):
        EpochBatches(4, 5, jax.random.key(0))


def test_state_and_restore_continue_the_same_sequence():
    reference = EpochBatches(10, 3, jax.random.key(2))
    expected = [np.asarray(o[i]) for o, i in (reference.next() for _ in range(8))]
    for cut in (0, 1, 3, 4, 7):  # mid-epoch and on epoch boundaries
        first = EpochBatches(10, 3, jax.random.key(2))
        seen = [np.asarray(o[i]) for o, i in (first.next() for _ in range(cut))]
        resumed = EpochBatches(10, 3, jax.random.key(99))
        resumed.restore(*first.state())
        seen += [np.asarray(o[i]) for o, i in (resumed.next() for _ in range(8 - cut))]
        for a, b in zip(seen, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_random_batches_are_distinct_uniform_and_a_function_of_the_key():
    """Subsamples without replacement, both branches (drawing 2B with rejection of repeats for
    a large set, a permutation for a small one): every batch distinct and in range, the same
    key the same batch, and each index chosen with frequency B / n (chi-square, 5 sd)."""
    from bmr_jax.inference.batches import random_batch

    for size, batch in ((2000, 100), (50, 10)):
        draws = np.concatenate([np.asarray(random_batch(jax.random.key(i), size, batch))
                                for i in range(400)])  # fmt: skip
        assert draws.shape == (400, batch) and draws.min() >= 0 and draws.max() < size
        assert all(len(set(row.tolist())) == batch for row in draws)
        counts = np.bincount(draws.ravel(), minlength=size)
        expected = 400 * batch / size
        chi2 = np.sum((counts - expected) ** 2 / expected)
        assert abs(chi2 - (size - 1)) < 5 * np.sqrt(2 * (size - 1))
        np.testing.assert_array_equal(random_batch(jax.random.key(7), size, batch),
                                      random_batch(jax.random.key(7), size, batch))  # fmt: skip
    # the rejection branch keeps the draw order: the first distinct draw leads
    first = np.asarray(random_batch(jax.random.key(3), 2000, 100))[0]
    raw = np.asarray(jax.random.randint(jax.random.key(3), (200,), 0, 2000))
    np.testing.assert_array_equal(first, list(dict.fromkeys(raw.tolist()))[:100])
