"""Prune a Flax model trained with plain Adam, after the fact: BMR on its Laplace posterior."""
import jax, jax.numpy as jnp, optax
from flax import nnx
import bmr_jax.data as data, bmr_jax.posthoc as posthoc

ds = data.load("mnist_mini", image_size=28)
x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
graphdef, params = nnx.split(nnx.Sequential(lambda x: x.reshape(len(x), -1), nnx.Linear(784, 300, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(300, 10, rngs=nnx.Rngs(1))))
apply = lambda p, x: nnx.merge(graphdef, p)(x)
state = (opt := optax.adam(1e-3)).init(params)

@jax.jit
def step(params, state, batch):  # your usual training
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x[batch]), y[batch]).mean())(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state

for i in range(600):
    params, state = step(params, state, jax.random.choice(jax.random.key(i), len(y), (128,)))
ggn = posthoc.ggn_diagonal(apply, params, ds.train.images, key=jax.random.key(0))  # the curvature
delta = posthoc.calibrate_prior_precision(params, ggn, scope="leaf")  # the prior, by the evidence
masks = posthoc.prune_laplace(posthoc.laplace_posterior(params, ggn, delta), rule="target", fraction=0.95)
params = posthoc.refit(apply, params, masks, ds.train.images, ds.train.labels, steps=300)
print(f"test accuracy {(apply(params, jnp.asarray(ds.test.images)).argmax(-1) == ds.test.labels).mean():.3f}, pruned 95.0% of the weights")
