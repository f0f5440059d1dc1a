"""The SVI engine: explicit training state and jit-compiled steps run in blocks (METHOD.md 3, 4.5).

A block is a fixed number of SVI steps; it is the unit at which BMR, evaluation, logging and
checkpoints happen. The step is compiled once per configuration: the pruning multipliers
``gamma`` are data, so changing masks between blocks does not recompile. The loss is the
negative ELBO per datum (the model and guide are scaled by ``1 / num_data``), with one
reparameterised sample per step and AdaBelief by default (the reference optimiser).

Everything a step depends on is in :class:`TrainState` or its arguments, in the style of
blackjax (``new_state, loss = trainer.step(key, state, gamma)``): the guide's unconstrained
parameters, the optax state and the number of steps taken, which is also the data cursor
(epoch ``position // num_batches``, whose permutation is a pure function of the seed and the
epoch). :meth:`SVITrainer.run_block` keys step ``t`` by ``fold_in(key, t)`` with ``t`` the
global step, so a run resumed from any state continues bit for bit::

    trainer = SVITrainer(bnet, guide, dataset.train, lr=5e-3)
    state = trainer.init()
    state, losses = trainer.run_block(state, 500, key=jax.random.key(1))
    params = trainer.params(state)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers
from numpyro.infer import Trace_ELBO, TraceMeanField_ELBO
from tqdm.auto import tqdm

from bmr_jax.bayes.guides import Guide, MeanFieldGuide
from bmr_jax.bayes.local import ESTIMATORS, LocalReparamModel
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.data import Split
from bmr_jax.inference import parallel
from bmr_jax.inference.batches import epoch_order, gather, random_batch
from bmr_jax.inference.kl_warmup import ScaleLatents, kl_weight
from bmr_jax.inference.transforms import as_gamma, param_transforms, strongly_typed


class TrainState(NamedTuple):
    """The state of SVI: a pytree of arrays (checkpointed leaf by leaf)."""

    params: dict  # unconstrained guide (and model point) parameters, by site name
    opt_state: optax.OptState
    position: jax.Array  # int32: steps taken, the data cursor


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
      seed: seeds the data order.
      minibatches: ``"epochs"`` (every epoch a fresh permutation cut into batches; the last
        partial batch dropped) or ``"random"`` (every step an independent subsample of
        ``batch_size`` images without replacement, METHOD.md 4.7); either way step ``t``'s
        batch is a pure function of the seed and ``t``.
      elbo: a NumPyro ELBO; default :func:`default_elbo`.
      mesh: a ``bmr_jax.inference.parallel.data_mesh()``: data-parallel steps, each minibatch split
        over the mesh's devices, state replicated (``None``: one device).
      estimator: ``"reparam"`` (one weight draw per step, shared by the minibatch),
        ``"local"`` (one draw per pre-activation and datum, :mod:`bmr_jax.bayes.local`; a
        mean-field guide only) or ``"local_dense"`` (local on the dense layers only).
      kl_warmup: ``(start, end)`` epochs: the KL term's weight is 0 before epoch ``start``,
        rises linearly to 1 at ``end`` and stays 1 (continuous in the step: epoch =
        ``position / num_batches``); ``None``: always 1. The loss it reports is the weighted
        objective.
      local_options: keyword arguments of the local estimator
        (:class:`bmr_jax.bayes.local.LocalReparamModel`: Sparse VD's ``clip`` and
        ``variance``).
    """

    prior_in_loss = True  # the loss is the negative ELBO (False: the likelihood term only)

    def __init__(self, bnet: BayesianNetwork, guide: Guide, train: Split, *,
                 optimizer: optax.GradientTransformation | None = None, lr: float = 1e-2,
                 batch_size: int = 120, seed: int = 0, elbo=None, mesh=None,
                 minibatches: str = "epochs", estimator: str = "reparam",
                 kl_warmup: tuple[float, float] | None = None,
                 local_options: dict | None = None):  # fmt: skip
        if not 1 <= batch_size <= len(train):
            raise ValueError(f"batch_size must be in [1, {len(train)}], got {batch_size}")
        if minibatches not in ("epochs", "random"):
            raise ValueError(f"minibatches must be 'epochs' or 'random', got {minibatches!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        if estimator != "reparam" and not isinstance(guide, MeanFieldGuide):
            raise ValueError(f"the local estimator needs the mean-field guide, not {guide.name!r}")
        self.minibatches, self.estimator, self.kl_warmup = minibatches, estimator, kl_warmup
        self.bnet, self.guide, self.mesh = bnet, guide, mesh
        self.num_data, self.batch_size = len(train), batch_size
        self.num_batches = self.num_data // batch_size
        self.optimizer = optimizer or optax.inject_hyperparams(optax.adabelief)(learning_rate=lr)
        self.elbo = elbo or default_elbo(guide)
        scale = 1.0 / self.num_data  # loss per datum
        model = bnet.model if estimator == "reparam" else LocalReparamModel(
            bnet, dense_only=estimator == "local_dense", **(local_options or {}))
        self.model = handlers.scale(model, scale=scale)
        self.scaled_guide = handlers.scale(guide, scale=scale)
        place = None
        if mesh is not None:
            parallel.check_batch(batch_size, mesh)
            place = parallel.replicated(mesh)
        self.images = jax.device_put(train.images, place)
        self.labels = jax.device_put(train.labels, place)
        self.data_key = jax.random.key(seed)
        self._order = None  # (epoch, its minibatches)
        x0, y0 = jnp.asarray(train.images[:2]), jnp.asarray(train.labels[:2])
        self._initial, self.transforms = param_transforms(
            self.model, self.scaled_guide, x0, y0, as_gamma(bnet.full_gamma()), self.num_data
        )
        self._init = jax.jit(self._make_init(), out_shardings=place)
        self._update = jax.jit(self._make_update(), donate_argnums=(0, 1, 2), out_shardings=place,
                               static_argnames=("fold",))  # fmt: skip
        self._all_finite = self._make_all_finite()

    def _make_update(self) -> Callable:
        mesh, num_data, batch_size = self.mesh, self.num_data, self.batch_size
        random_batches, data_key = self.minibatches == "random", self.data_key

        def update(params, opt_state, position, key, images, labels, order, i, gamma, fold):
            if fold:  # key is the block's: step t draws from fold_in(key, t)
                key = jax.random.fold_in(key, position)
            if random_batches:  # step t's batch: a pure function of the seed and t
                batch_key = jax.random.fold_in(data_key, position)
                order, i = random_batch(batch_key, num_data, batch_size), 0
            x, y = gather(images, labels, order, i)
            x, y = parallel.shard_batch(x, mesh), parallel.shard_batch(y, mesh)

            model, guide = self.model, self.scaled_guide
            if self.kl_warmup is not None:
                weight = kl_weight(position, self.num_batches, *self.kl_warmup)
                model, guide = ScaleLatents(model, weight), ScaleLatents(guide, weight)
            elif not self.prior_in_loss:  # the likelihood alone (IVON: the prior is elsewhere)
                model, guide = ScaleLatents(model, 0.0), ScaleLatents(guide, 0.0)

            def loss_fn(unconstrained):
                args = (x, y, gamma, num_data)
                return self.elbo.loss(key, self.constrain(unconstrained), model, guide, *args)

            point = self.gradient_point(params, opt_state)
            loss, grads = jax.value_and_grad(loss_fn)(point)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, position + 1, loss

        return update

    def gradient_point(self, params, opt_state):
        """Where the step takes the loss's gradient: the parameters themselves (a subclass
        may draw, e.g. IVON at ``m + sigma u``)."""
        return params

    def _make_all_finite(self) -> Callable:
        def all_finite(state):
            leaves = jax.tree.leaves((state.params, state.opt_state))
            inexact = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype,
                       jnp.inexact)]  # fmt: skip
            return jnp.all(jnp.stack(inexact))

        return jax.jit(all_finite)

    # ---------------------------------------------------------------- state and steps

    def _make_init(self) -> Callable:
        def init(initial):
            params = self.unconstrain(initial)
            state = TrainState(params, self.optimizer.init(params), jnp.zeros((), jnp.int32))
            return strongly_typed(state)

        return init

    def init(self) -> TrainState:
        """The state before the first step: the guide's initial values, a fresh optimiser
        (new buffers: the steps donate theirs)."""
        return self._init(self._initial)

    def epoch_order(self, epoch: int) -> jax.Array:
        """Epoch ``epoch``'s minibatches: a permutation cut into ``(num_batches, batch)``, a
        pure function of the seed and ``epoch`` (this trainer keeps the last one drawn)."""
        if self._order is None or self._order[0] != epoch:
            key = jax.random.fold_in(self.data_key, epoch)
            self._order = (epoch, epoch_order(key, self.num_data, self.batch_size))
        return self._order[1]

    def step(self, key: jax.Array, state: TrainState, gamma, position: int | None = None, *,
             fold: bool = False):  # fmt: skip
        """One SVI step on minibatch ``state.position``: ``(new_state, loss)``. ``state`` is
        donated. ``position`` (``int(state.position)``, if the caller tracks it) saves a
        device round trip. With ``fold`` the step draws from ``fold_in(key, position)``
        (inside the compiled step: an eager ``fold_in`` costs milliseconds)."""
        position = int(state.position) if position is None else position
        order, i = None, 0
        if self.minibatches == "epochs":
            epoch, i = divmod(position, self.num_batches)
            order = self.epoch_order(epoch)
        *new_state, loss = self._update(
            *state, key, self.images, self.labels, order, np.int32(i), as_gamma(gamma), fold=fold
        )
        return TrainState(*new_state), loss

    def run_block(self, state: TrainState, steps: int, gamma=None, *, key: jax.Array,
                  progress: bool = True, description: str = "block",
                  should_stop: Callable[[], bool] | None = None,
                  on_step: Callable[[int], None] | None = None):  # fmt: skip
        """Runs ``steps`` SVI steps; returns ``(state, losses)`` (losses per datum, numpy).
        Step number ``t`` (global) draws its noise from ``fold_in(key, t)``.

        ``should_stop()`` is asked before every step; when it says yes the block ends early
        and ``losses`` is shorter than ``steps`` (how SIGINT/SIGTERM stop a run cleanly).
        ``on_step(t)`` is called after step ``t`` (a test hook).
        """
        gamma = as_gamma(self.bnet.full_gamma() if gamma is None else gamma)
        position, losses = int(state.position), []
        bar = tqdm(total=steps, disable=not progress, unit="step", desc=description, leave=False)
        start = time.perf_counter()
        for _ in range(steps):
            if should_stop is not None and should_stop():
                break
            state, loss = self.step(key, state, gamma, position, fold=True)
            position += 1
            losses.append(loss)
            if on_step is not None:
                on_step(position)
            if progress and len(losses) % 25 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
                bar.update(25)
        losses = np.asarray(jax.device_get(losses), np.float32).reshape(-1)
        bar.update(len(losses) - bar.n)
        bar.close()
        self.last_block_seconds = time.perf_counter() - start
        return state, losses

    # ---------------------------------------------------------------- parameters

    def constrain(self, unconstrained: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return {k: self.transforms[k](v) for k, v in unconstrained.items()}

    def unconstrain(self, constrained: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return {k: self.transforms[k].inv(v) for k, v in constrained.items()}

    def params(self, state: TrainState) -> dict[str, jax.Array]:
        """The guide's (and the model's point) parameters, constrained (jit-able)."""
        return self.constrain(state.params)

    def set_params(self, state: TrainState, values: Mapping[str, jax.Array]) -> TrainState:
        """``state`` with the named parameters replaced by ``values`` (constrained), keeping
        the optimiser's moments: how a reduced posterior is written back (jit-able)."""
        params = dict(state.params)
        for name, value in values.items():
            params[name] = self.transforms[name].inv(jnp.asarray(value, params[name].dtype))
        return state._replace(params=params)

    def all_finite(self, state: TrainState) -> bool:
        """Whether every parameter and optimiser moment in ``state`` is finite."""
        return bool(self._all_finite(state))

    # ---------------------------------------------------------------- learning rate

    def learning_rate(self, state: TrainState) -> float | None:
        """The current learning rate, if the optimiser keeps it in its state
        (``optax.inject_hyperparams``)."""
        hyperparams = getattr(state.opt_state, "hyperparams", None)
        return None if hyperparams is None else float(hyperparams["learning_rate"])

    def scale_learning_rate(self, state: TrainState, factor: float) -> TrainState:
        """``state`` with its learning rate times ``factor``."""
        if not hasattr(state.opt_state, "hyperparams"):
            raise ValueError("the optimiser does not keep its learning rate in its state; "
                             "wrap it with optax.inject_hyperparams")  # fmt: skip
        hyperparams = dict(state.opt_state.hyperparams)
        hyperparams["learning_rate"] = hyperparams["learning_rate"] * factor
        return state._replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))
