"""A short refit of the weights a pruning kept (issue 39): Adam on the cross-entropy with the
pruned entries held at exactly zero (their gradients masked, their values zeroed after every
step), as post-hoc pruning is followed in Han et al. 2015 and Zhu & Gupta 2017."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from bmr_jax.inference.batches import EpochBatches, gather


def refit(apply: Callable, params, masks, images, labels, *, steps: int, lr: float = 1e-3,
          batch_size: int = 100, seed: int = 0):  # fmt: skip
    """``params`` pruned by ``masks`` (True = kept) and trained ``steps`` Adam steps more,
    the pruned entries zero throughout."""
    optimizer = optax.adam(lr)

    def zeroed(p):
        return jax.tree.map(lambda x, m: jnp.where(m, x, 0.0), p, masks)

    @jax.jit
    def step(p, opt_state, images, labels, order, i):
        x, y = gather(images, labels, order, i)  # on the device, inside the compiled step

        def loss(q):
            logits = apply(zeroed(q), x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.tree.map(lambda g, m: jnp.where(m, g, 0.0), jax.grad(loss)(p), masks)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return zeroed(optax.apply_updates(p, updates)), opt_state

    params = zeroed(params)
    opt_state = optimizer.init(params)
    batches = EpochBatches(len(images), batch_size, jax.random.key(seed))
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    for _ in range(steps):
        order, i = batches.next()
        params, opt_state = step(params, opt_state, images, labels, order, i)
    return params
