"""Minibatches from an on-device shuffled index.

The training set is copied to the device once. Each epoch draws a fresh permutation on the
device and cuts it into full batches ``order`` of shape ``(num_batches, batch_size)``; a jitted
step receives ``order`` and the batch number ``i`` and gathers ``images[order[i]]`` itself, so no
data moves between host and device during training.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.jit, static_argnums=(1, 2))
def epoch_order(key: jax.Array, size: int, batch_size: int) -> jax.Array:
    """A fresh permutation of ``range(size)`` cut into full batches ``(size // B, B)``."""
    num_batches = size // batch_size
    perm = jax.random.permutation(key, size)[: num_batches * batch_size]
    return perm.reshape(num_batches, batch_size)


def random_batch(key: jax.Array, size: int, batch_size: int) -> jax.Array:
    """One minibatch drawn afresh: ``batch_size`` distinct indices of ``range(size)``, uniform
    over subsets and orders, as a ``(1, batch_size)`` order (the reference code's
    subsampling, METHOD.md 4.7); jit-able, ``size`` and ``batch_size`` static.

    A permutation of 60,000 indices per step costs as much as a LeNet-5 step on a CPU, so for
    ``size >= 16 batch_size`` this draws ``2 batch_size`` indices with replacement and keeps
    the first ``batch_size`` distinct ones in draw order: sequential sampling that rejects
    repeats, hence exactly sampling without replacement. (It runs short of distinct draws with
    probability below 1e-50 at batch 120; the batch then repeats an image.) Smaller
    sets are permuted."""
    if size < 16 * batch_size:
        return jax.random.permutation(key, size)[:batch_size][None]
    draws = jax.random.randint(key, (2 * batch_size,), 0, size)
    order = jnp.argsort(draws, stable=True)  # equal draws stay in draw order
    ranked = draws[order]
    first = jnp.concatenate([jnp.ones(1, bool), ranked[1:] != ranked[:-1]])
    distinct = jnp.zeros(draws.shape, bool).at[order].set(first)  # first time drawn
    keep = jnp.argsort(~distinct, stable=True)[:batch_size]  # distinct ones, in draw order
    return draws[keep][None]


def gather(images: jax.Array, labels: jax.Array, order: jax.Array, i) -> tuple:
    """Batch ``i`` of ``order`` (use inside a jitted step)."""
    index = order[i]
    return jnp.take(images, index, axis=0), jnp.take(labels, index, axis=0)


class EpochBatches:
    """Yields ``(order, i)`` for successive steps, reshuffling at every epoch.

    The last incomplete batch of each epoch is dropped. State is the key and the position, so
    a run can be resumed from ``(key, step)``.
    """

    def __init__(self, size: int, batch_size: int, key: jax.Array):
        if not 1 <= batch_size <= size:
            raise ValueError(f"batch_size must be in [1, {size}], got {batch_size}")
        self.size, self.batch_size, self.key = size, batch_size, key
        self.num_batches = size // batch_size
        self.position = 0
        self._order = None
        self._order_epoch = -1
        self._epoch_key = key  # the key the current epoch's permutation was drawn from

    def peek(self) -> tuple[jax.Array, int]:
        """The ``(order, i)`` that :meth:`next` will return, without advancing."""
        epoch, i = divmod(self.position, self.num_batches)
        if epoch != self._order_epoch:  # first batch of a new epoch: draw its permutation
            self._epoch_key = self.key
            self.key, epoch_key = jax.random.split(self.key)
            self._order = epoch_order(epoch_key, self.size, self.batch_size)
            self._order_epoch = epoch
        return self._order, i

    def state(self) -> tuple[jax.Array, int]:
        """``(key, position)`` from which :meth:`restore` continues exactly where this is."""
        drawn = self._order_epoch == self.position // self.num_batches
        return (self._epoch_key if drawn else self.key), self.position

    def restore(self, key: jax.Array, position: int) -> None:
        """Continues from a :meth:`state`: the same batches, in the same order."""
        self.key, self.position, self._order, self._order_epoch = key, position, None, -1

    def next(self) -> tuple[jax.Array, int]:
        """``(order, i)`` of the next step's batch; advances by one."""
        batch = self.peek()
        self.position += 1
        return batch
