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
