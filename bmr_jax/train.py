"""The SVI engine: jit-compiled steps run in blocks (METHOD.md sections 3 and 4.5).

A block is a fixed number of SVI steps; it is the unit at which BMR, evaluation, logging and
checkpoints happen. The step is compiled once per configuration: the pruning multipliers
``gamma`` are data, so changing masks between blocks does not recompile. The loss is the
negative ELBO per datum (the model and guide are scaled by ``1 / num_data``), with one
reparameterised sample per step and AdaBelief by default (the reference optimiser).

    trainer = SVITrainer(bnet, guide, dataset.train, lr=5e-3)
    state = trainer.init()
    state, losses = trainer.run_block(state, steps=500)
    params = trainer.params(state)
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from tqdm.auto import tqdm

from bmr_jax import parallel
from bmr_jax.batches import EpochBatches, gather
from bmr_jax.data import Split
from bmr_jax.guides import Guide, MeanFieldGuide
from bmr_jax.model import BayesianNetwork


def as_gamma(gamma: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Pruning multipliers as strongly typed arrays of the default float type, so that masks
    built from Python scalars (weakly typed) do not trigger a recompilation."""
    dtype = jnp.result_type(float)
    return {k: jnp.asarray(v, dtype=dtype) for k, v in gamma.items()}


def default_elbo(guide: Guide):
    """Analytic KL where it exists (mean-field Normal against the N(0, 1) prior on Z), a
    one-sample Monte Carlo estimate elsewhere."""
    return TraceMeanField_ELBO() if isinstance(guide, MeanFieldGuide) else Trace_ELBO()


class SVITrainer:
    """Stochastic variational inference of a :class:`BayesianNetwork` with a guide.

    Args:
      bnet: the Bayesian network (model).
      guide: the approximate posterior.
      train: the training split (copied to the device once).
      optimizer: any optax optimiser; default AdaBelief at ``lr``, with the learning rate
        kept in the optimiser state (``optax.inject_hyperparams``) so that a run can lower
        it after a non-finite step (:meth:`scale_learning_rate`).
      lr: learning rate of the default optimiser.
      batch_size: minibatch size (the reference uses 120).
      seed: seeds the data order and the SVI randomness.
      elbo: a NumPyro ELBO; default :func:`default_elbo`.
      mesh: a ``bmr_jax.parallel.data_mesh()``: data-parallel steps, each minibatch split
        over the mesh's devices, state replicated (``None``: one device).
    """

    def __init__(
        self,
        bnet: BayesianNetwork,
        guide: Guide,
        train: Split,
        *,
        optimizer: optax.GradientTransformation | None = None,
        lr: float = 1e-2,
        batch_size: int = 120,
        seed: int = 0,
        elbo=None,
        mesh=None,
    ):
        self.bnet, self.guide = bnet, guide
        self.num_data = len(train)
        scale = 1.0 / self.num_data  # loss per datum
        self.svi = SVI(
            handlers.scale(bnet.model, scale=scale),
            handlers.scale(guide, scale=scale),
            optimizer or optax.inject_hyperparams(optax.adabelief)(learning_rate=lr),
            elbo or default_elbo(guide),
        )
        self.mesh = mesh
        place = None
        if mesh is not None:
            parallel.check_batch(batch_size, mesh)
            place = parallel.replicated(mesh)
        self.images = jax.device_put(train.images, place)
        self.labels = jax.device_put(train.labels, place)
        init_key, data_key = jax.random.split(jax.random.key(seed))
        self._init_key = init_key
        self.batches = EpochBatches(self.num_data, batch_size, data_key)
        num_data = self.num_data

        def batch(images, labels, order, i):
            x, y = gather(images, labels, order, i)
            return parallel.shard_batch(x, mesh), parallel.shard_batch(y, mesh)

        def init(key, images, labels, order, gamma):
            return self.svi.init(key, *batch(images, labels, order, 0), gamma, num_data)

        def step(state, images, labels, order, i, gamma):
            return self.svi.update(state, *batch(images, labels, order, i), gamma, num_data)

        self._init = jax.jit(init, out_shardings=place)
        self._step = jax.jit(step, donate_argnums=0, out_shardings=place)
        self._all_finite = jax.jit(
            lambda state: jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state.optim_state)])
            )  # fmt: skip
        )

    def init(self, gamma: Mapping[str, jax.Array] | None = None):
        """The initial SVI state (guide parameters at their initial values)."""
        gamma = as_gamma(self.bnet.full_gamma() if gamma is None else gamma)
        order, _ = self.batches.peek()
        return self._init(self._init_key, self.images, self.labels, order, gamma)

    def step(self, state, gamma):
        """One SVI step on the next minibatch: ``(state, loss)``."""
        return self._step(state, self.images, self.labels, *self.batches.next(), as_gamma(gamma))

    def run_block(
        self,
        state,
        steps: int,
        gamma: Mapping[str, jax.Array] | None = None,
        *,
        progress: bool = True,
        description: str = "block",
        should_stop=None,
    ):
        """Runs ``steps`` SVI steps; returns ``(state, losses)`` (losses per datum, numpy).

        ``should_stop()`` is asked before every step; when it says yes the block ends early
        and ``losses`` is shorter than ``steps`` (how SIGINT/SIGTERM stop a run cleanly).
        """
        gamma = as_gamma(self.bnet.full_gamma() if gamma is None else gamma)
        losses = []
        bar = tqdm(total=steps, disable=not progress, unit="step", desc=description, leave=False)
        start = time.perf_counter()
        for t in range(steps):
            if should_stop is not None and should_stop():
                break
            state, loss = self._step(state, self.images, self.labels, *self.batches.next(), gamma)
            losses.append(loss)
            if progress and (t + 1) % 25 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
                bar.update(25)
        losses = np.asarray(jax.device_get(losses), np.float32).reshape(-1)
        bar.update(len(losses) - bar.n)
        bar.close()
        self.last_block_seconds = time.perf_counter() - start
        return state, losses

    def all_finite(self, state) -> bool:
        """Whether every parameter and optimiser moment in ``state`` is finite."""
        return bool(self._all_finite(state))

    def learning_rate(self, state) -> float | None:
        """The current learning rate, if the optimiser keeps it in its state."""
        hyperparams = getattr(state.optim_state[1][1], "hyperparams", None)
        return None if hyperparams is None else float(hyperparams["learning_rate"])

    def scale_learning_rate(self, state, factor: float):
        """``state`` with its learning rate times ``factor`` (the default optimiser only)."""
        step, (params, opt_state) = state.optim_state
        if not hasattr(opt_state, "hyperparams"):
            raise ValueError("the optimiser does not keep its learning rate in its state; "
                             "wrap it with optax.inject_hyperparams")  # fmt: skip
        hyperparams = dict(opt_state.hyperparams)
        hyperparams["learning_rate"] = hyperparams["learning_rate"] * factor
        opt_state = opt_state._replace(hyperparams=hyperparams)
        return state._replace(optim_state=(step, (params, opt_state)))

    def params(self, state) -> dict[str, jax.Array]:
        """The guide's (and the model's point) parameters, constrained."""
        return self.svi.get_params(state)

    def set_params(self, state, values: Mapping[str, jax.Array]):
        """``state`` with the named parameters replaced by ``values`` (constrained), keeping
        the optimiser's moments: how a reduced posterior is written back into the guide."""
        transforms = self.svi.constrain_fn.args[0]  # name -> bijection from unconstrained
        step, (params, optimizer_state) = state.optim_state
        params = dict(params)
        for name, value in values.items():
            params[name] = transforms[name].inv(jnp.asarray(value, params[name].dtype))
        return state._replace(optim_state=(step, (params, optimizer_state)))
