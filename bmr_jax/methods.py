"""The paper's methods as (prior, guide, optimiser settings) and a block-wise runner.

METHOD.md sections 3 and 6:

==========  ===========  ==========  ======  =======  ============
method      prior        guide       lr      dropout  eval samples
==========  ===========  ==========  ======  =======  ============
flat_map    flat         delta       1e-3    0.2      1
flat_ff     flat         mean-field  5e-3    0        100
tiered_ff   horseshoe    mean-field  5e-3    0        100
bmr_ss      flat         mean-field  1e-2    0        100
bmr_rhs     flat         mean-field  1e-2    0        100
bmr_units   flat         matrix-n.   1e-2    0        100
==========  ===========  ==========  ======  =======  ============

BMR-S&S (METHOD.md 4.5) is Flat-FF with a reduce step before every block after the first
(warm-up): Delta F of every prunable weight, the spike-and-slab rule, pruned weights' prior
multipliers set to 1e-12, and SVI continued under the reduced prior with the same optimiser
state. ``write_back=True`` also writes the reduced posterior into the guide.

``bmr_units`` (ours, not in the paper's grid) is structured BMR-S&S: a matrix-normal guide,
and the spike-and-slab rule applied to the closed-form Delta F of removing whole output units
(METHOD.md 4.3), so pruning removes neurons and conv channels.

BMR-RHS (METHOD.md 4.6) replaces the rule by a fit of regularised-horseshoe hyper-parameters
with Delta F as their likelihood (:mod:`bmr_jax.bmr.rhs`); every weight's prior multiplier
becomes its fitted scale (pruned below a threshold), and the reduced posterior is written back
so that the network's function carries over to the new prior.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bmr_jax import bmr, evaluate, guides, nets, priors
from bmr_jax.bmr import Rule, SpikeAndSlab
from bmr_jax.bmr.rhs import RHSConfig, flat_posterior, make_rhs_fit, rhs_gamma_and_masks
from bmr_jax.data import Dataset
from bmr_jax.errors import BmrJaxError
from bmr_jax.model import BayesianNetwork
from bmr_jax.registry import Registry
from bmr_jax.train import SVITrainer


@dataclass(frozen=True)
class Method:
    """A named inference method: which prior and guide, and its reference settings."""

    name: str
    prior: str
    guide: str
    lr: float
    dropout: float = 0.0
    eval_samples: int = 100
    prior_options: dict = field(default_factory=dict)
    rule: Rule | None = None  # a decision rule makes it a BMR method
    write_back: bool = False
    rhs: RHSConfig | None = None  # BMR-RHS: fit horseshoe hyper-parameters by BMR
    structured: bool = False  # prune whole units from a matrix-normal guide (METHOD.md 4.3)


METHODS: Registry[Method] = Registry("method")
for _m in (
    Method("flat_map", "flat", "delta", lr=1e-3, dropout=0.2, eval_samples=1),
    Method("flat_ff", "flat", "mean_field", lr=5e-3),
    Method("tiered_ff", "horseshoe", "mean_field", lr=5e-3),
    Method("bmr_ss", "flat", "mean_field", lr=1e-2, rule=SpikeAndSlab()),
    Method("bmr_rhs", "flat", "mean_field", lr=1e-2, write_back=True, rhs=RHSConfig()),
    Method("bmr_units", "flat", "matrix_normal", lr=1e-2, rule=SpikeAndSlab(), structured=True),
):
    METHODS.register(_m.name, _m)


@dataclass
class Setup:
    """A Bayesian network, its guide and its trainer, ready to run blocks."""

    method: Method
    bnet: BayesianNetwork
    guide: guides.Guide
    trainer: SVITrainer
    sequential: bool = True  # the network's layers read each other in sequence
    state: object = None  # the SVI state after :func:`run`
    masks: dict | None = None  # the pruning masks after :func:`run`


def configured(
    name: str, *, inclusion_rate: str = "layer", prior: str | None = None, rule: str | None = None
) -> Method:
    """The registered method ``name`` with the config's options applied: ``prior`` replaces
    its prior (a registered name), ``rule`` its decision rule (a BMR method's; a name in
    ``bmr.RULES`` whose defaults suffice), ``inclusion_rate`` its spike-and-slab rule's."""
    method = METHODS.get(name)
    if rule is not None and method.rule is not None and rule != method.rule.name:
        method = replace(method, rule=bmr.RULES.get(rule)())
    if prior is not None and prior != method.prior:
        method = replace(method, prior=prior, prior_options={})
    if isinstance(method.rule, SpikeAndSlab) and method.rule.rate_over != inclusion_rate:
        method = replace(method, rule=replace(method.rule, rate_over=inclusion_rate))
    return method


def build(
    method: str | Method,
    dataset: Dataset,
    *,
    net: str = "lenet5",
    preset: str = "paper",
    batch_size: int = 120,
    lr: float | None = None,
    seed: int = 137,
    optimizer: optax.GradientTransformation | None = None,
    mesh=None,
) -> Setup:
    """Builds network, prior, model, guide and trainer for ``method`` on ``dataset``."""
    method = METHODS.get(method) if isinstance(method, str) else method
    module = nets.create_net(
        net,
        dataset.num_classes,
        dataset.image_shape,
        preset,
        rngs=nnx.Rngs(seed),
        dropout=method.dropout,
    )
    prior = priors.create_prior(method.prior, **method.prior_options)
    bnet = BayesianNetwork.from_module(module, dataset.image_shape, prior)
    init = bnet.init_latents()
    x0 = jnp.asarray(dataset.train.images[:2])
    y0 = jnp.asarray(dataset.train.labels[:2])
    sites = guides.latent_sites(bnet.model, x0, y0, init_values=init)
    guide = guides.GUIDES.get(method.guide)(sites, init)
    trainer = SVITrainer(
        bnet,
        guide,
        dataset.train,
        optimizer=optimizer,
        lr=method.lr if lr is None else lr,
        batch_size=batch_size,
        seed=seed,
        mesh=mesh,
    )
    return Setup(method, bnet, guide, trainer, nets.get_net_spec(net).sequential)


@dataclass
class RunState:
    """Everything a run needs to continue after block ``block`` (a checkpoint's content), or
    ``step`` steps into the next block (a run stopped by a signal; the block's reduce step
    has been applied and ``losses`` holds its steps so far)."""

    block: int  # blocks completed
    svi_state: object
    masks: dict  # {layer: bool (rows, cols)}
    gamma: dict  # {layer: prior multipliers}
    batches: tuple  # EpochBatches.state(): (key, position)
    step: int = 0  # steps done in block ``block + 1``
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    reduce_seconds: float = 0.0  # of block ``block + 1``, when ``step > 0``


class RunStopped(Exception):
    """``run`` stopped inside a block because ``should_stop()`` said so; ``state`` resumes it."""

    def __init__(self, state: RunState):
        super().__init__(f"stopped after {state.step} steps of block {state.block + 1}")
        self.state = state


class NonFiniteError(BmrJaxError):
    """The loss or the parameters became NaN or infinite; ``state`` is the last good one."""

    def __init__(self, block: int, step: int, state: RunState):
        super().__init__(
            f"non-finite loss or parameters in block {block} at step {step}; the last good "
            f"state is the end of block {state.block} (lower train.lr, or set "
            "train.on_nonfinite=rollback)"
        )
        self.block, self.step, self.state = block, step, state


def initial_state(setup: Setup) -> RunState:
    """The state before the first block."""
    view = setup.bnet.view
    return RunState(
        block=0,
        svi_state=setup.trainer.init(),
        masks={s.name: jnp.ones(s.shape, bool) for s in view.bayesian_layers},
        gamma=setup.bnet.full_gamma(),
        batches=setup.trainer.batches.state(),
    )


def run(
    setup: Setup,
    dataset: Dataset,
    *,
    blocks: int,
    steps_per_block: int,
    eval_samples: int | None = None,
    chunk_size: int = 1000,
    eval_every: int = 1,
    warmup_blocks: int = 1,
    seed: int = 137,
    progress: bool = True,
    on_block: Callable[[dict, RunState], None] | None = None,
    resume: RunState | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_nonfinite: str = "stop",
    rollback_factor: float = 0.5,
    max_rollbacks: int = 3,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Trains block by block, evaluating on the test split after every ``eval_every``-th block
    and after the last (the other blocks record ``None`` for the test metrics).

    For a BMR method, every block after the first ``warmup_blocks`` (1 in METHOD.md 4.5)
    starts with the reduce step.
    ``on_block(record, state)`` is called after every block (to log and checkpoint);
    ``resume`` continues from such a state (randomness is keyed by block number, so a resumed
    run equals an uninterrupted one bit for bit). When ``should_stop()`` turns true the run
    stops before its next step and raises :class:`RunStopped` with the state to resume.

    A NaN or infinite loss or parameter raises :class:`NonFiniteError` naming the block and
    step (``on_nonfinite="stop"``), or (``"rollback"``) restarts the block from the last good
    state with the learning rate times ``rollback_factor``, at most ``max_rollbacks`` times.

    Returns one record per block run: ``block``, ``step``, ``loss`` (mean per-datum negative
    ELBO of the block), ``acc``, ``nll``, ``ece``, ``lpd``, ``pruned_fraction``,
    ``dead_fraction``, ``compression``, ``lr``, ``train_seconds``, ``reduce_seconds``,
    ``eval_seconds`` and ``seconds`` (their sum).
    """
    samples = eval_samples or setup.method.eval_samples
    predictive = evaluate.make_predictive(setup.bnet, setup.guide, setup.trainer.mesh)
    view = setup.bnet.view
    reduce = rhs_fit = None
    prior_var = {s.name: setup.bnet.prior.prior_variance(s) for s in view.bayesian_layers}
    if setup.method.rule is not None:
        make = bmr.make_neuron_reduce if setup.method.structured else bmr.make_guide_reduce
        reduce = make(setup.trainer, setup.method.rule, prior_var)
    if setup.method.rhs is not None:
        rhs_fit = make_rhs_fit(view, setup.method.rhs)
        read_posterior = jax.jit(partial(bmr.read_mean_field_posterior, setup.trainer))
    current = resume or initial_state(setup)
    setup.trainer.batches.restore(*current.batches)
    state, masks, gamma = current.svi_state, current.masks, current.gamma
    base_key = jax.random.key(seed + 1)
    records, rollbacks = [], 0
    block = current.block + 1
    while block <= blocks:
        block_key = jax.random.fold_in(base_key, block)
        fit_key, eval_key = jax.random.split(block_key)
        if on_nonfinite == "rollback":  # the steps donate ``state``: keep the last good one
            state = jax.tree.map(jnp.copy, current.svi_state)
        if current.step and current.block == block - 1:  # resuming inside this block
            done, reduce_seconds = current.losses, current.reduce_seconds
        else:
            done, reduce_seconds = np.zeros(0, np.float32), 0.0
            if reduce is not None and block > warmup_blocks:
                start = time.perf_counter()
                result = reduce(state, masks, block, setup.method.write_back)
                masks = jax.block_until_ready(result.masks)
                reduce_seconds = time.perf_counter() - start
                if result.reduced is not None:
                    state = setup.trainer.set_params(state, _guide_values(result.reduced))
                gamma = bmr.gamma_from_masks(masks)
            if rhs_fit is not None and block > warmup_blocks:
                start = time.perf_counter()
                posterior = read_posterior(state)
                fitted, _ = rhs_fit(fit_key, flat_posterior(posterior, gamma, masks))
                old_gamma = gamma
                gamma, masks = rhs_gamma_and_masks(fitted, masks, setup.method.rhs.threshold)
                gamma = jax.block_until_ready(gamma)
                reduce_seconds = time.perf_counter() - start
                if setup.method.write_back:
                    state = setup.trainer.set_params(
                        state, _rescaled_posterior(posterior, old_gamma, gamma, prior_var)
                    )
        state, losses = setup.trainer.run_block(
            state,
            steps_per_block - len(done),
            gamma,
            progress=progress,
            description=f"block {block}/{blocks}",
            should_stop=should_stop,
        )
        losses = np.concatenate([done, losses])
        batches = setup.trainer.batches.state()
        if len(losses) < steps_per_block:
            raise RunStopped(RunState(block - 1, state, masks, gamma, batches, len(losses),
                                      losses, reduce_seconds))  # fmt: skip
        finite = np.isfinite(losses)
        if not finite.all() or not setup.trainer.all_finite(state):
            step = (block - 1) * steps_per_block + int(np.argmin(finite)) + 1
            if finite.all():
                step = block * steps_per_block
            if on_nonfinite != "rollback" or rollbacks >= max_rollbacks:
                raise NonFiniteError(block, step, current)
            rollbacks += 1
            state = setup.trainer.scale_learning_rate(current.svi_state, rollback_factor)
            masks, gamma = current.masks, current.gamma
            setup.trainer.batches.restore(*current.batches)
            current = replace(current, svi_state=state)
            if log:
                lr = setup.trainer.learning_rate(state)
                log(f"block {block}: non-finite loss or parameters at step {step}; back to "
                    f"the end of block {current.block} with lr {lr:.3g} "
                    f"({rollbacks}/{max_rollbacks})")  # fmt: skip
            continue
        start = time.perf_counter()
        if block % eval_every == 0 or block == blocks:
            probs = evaluate.predictive_probs(
                setup.bnet,
                setup.guide,
                setup.trainer.params(state),
                dataset.test.images,
                key=eval_key,
                samples=samples,
                gamma=gamma,
                chunk_size=chunk_size,
                predictive=predictive,
            )
            test_metrics = evaluate.classification_metrics(probs, dataset.test.labels)
        else:
            test_metrics = dict.fromkeys(evaluate.CLASSIFICATION_METRICS)
        counts = bmr.sparsity(masks, view, setup.sequential)
        record = {
            "block": block,
            "step": block * steps_per_block,
            "loss": float(losses.mean()),
            **test_metrics,
            "pruned_fraction": counts["pruned_fraction"],
            "dead_fraction": counts["dead_fraction"],
            "compression": counts["compression"],
            "lr": setup.trainer.learning_rate(state),
            "train_seconds": setup.trainer.last_block_seconds,
            "reduce_seconds": reduce_seconds,
            "eval_seconds": time.perf_counter() - start,
        }
        # DESIGN.md's contract: the block's wall time (training, reduce and evaluation)
        record["seconds"] = record["train_seconds"] + reduce_seconds + record["eval_seconds"]
        records.append(record)
        current = RunState(block, state, masks, gamma, batches)
        if on_block:
            on_block(record, current)
        block += 1
    setup.state, setup.masks = state, masks
    return records


def _rescaled_posterior(posterior, old_gamma, new_gamma, prior_var):
    """Guide values after a change of prior multipliers from ``old`` to ``new``: the reduced
    posterior of ``Z_old`` under the reduced prior ``N(0, s (new / old)^2)``, in the new
    non-centred coordinates (METHOD.md 4.1; :func:`bmr.noncentred_reduced_posterior`)."""
    reduced = {}
    for name, (mean, precision) in posterior.items():
        # a posterior wider than its prior carries nothing beyond it: keeps d > 0
        precision = jnp.maximum(precision, 1.0 / prior_var[name])
        ratio = new_gamma[name] / old_gamma[name]
        g = prior_var[name] * jnp.square(jnp.where(ratio < 1e-6, 0.0, ratio))
        loc, prec = bmr.noncentred_reduced_posterior(mean, precision, prior_var[name], g)
        reduced[name] = (loc, jax.lax.rsqrt(prec))
    return _guide_values(reduced)


def _guide_values(reduced):
    """``{layer: (loc, scale)}`` as the mean-field guide's parameter names."""
    values = {}
    for name, (loc, scale) in reduced.items():
        values[f"{name}/z/loc"], values[f"{name}/z/scale"] = loc, scale
    return values
