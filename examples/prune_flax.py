"""Prune your own Flax model by Bayesian model reduction: train it with IVON, let BMR mask it."""
import jax, jax.numpy as jnp, optax
from flax import nnx
import bmr_jax.data as data, bmr_jax.bmr.pruning as pruning, bmr_jax.inference.ivon as ivon

ds = data.load("mnist_mini", image_size=28)
x, y = jnp.asarray(ds.train.images), jnp.asarray(ds.train.labels)
graphdef, params = nnx.split(nnx.Sequential(lambda x: x.reshape(len(x), -1), nnx.Linear(784, 300, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(300, 10, rngs=nnx.Rngs(1))))
loss = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(x), y).mean()
opt = pruning.bmr_pruning(ivon.ivon(0.1, ess=len(y)), every=100)  # the BMR masks live in the optimiser state
state = opt.init(params)

@jax.jit
def step(params, state, i):
    b = jax.random.choice(jax.random.key(i), len(y), (128,))
    grads = jax.grad(loss)(ivon.sample_parameters(params, state), x[b], y[b])  # at a posterior draw
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

for i in range(600):
    params, state = step(params, state, i)
print(f"test accuracy {(nnx.merge(graphdef, params)(jnp.asarray(ds.test.images)).argmax(-1) == ds.test.labels).mean():.3f}, "
      f"pruned {pruning.pruned_fraction(state.masks, params):.1%} of the weights")
