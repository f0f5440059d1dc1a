"""The paper's methods as (prior, guide, optimiser settings) and a block-wise runner.

METHOD.md sections 3 and 6:

==========  ===========  ==========  ======  =======  ============
method      prior        guide       lr      dropout  eval samples
==========  ===========  ==========  ======  =======  ============
flat_map    flat         delta       1e-3    0.2      1
flat_ff     flat         mean-field  5e-3    0        100
tiered_ff   horseshoe    mean-field  5e-3    0        100
==========  ===========  ==========  ======  =======  ============

BMR-S&S and BMR-RHS (flat prior + mean-field guide + reduction between blocks) arrive with the
BMR kernels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bmr_jax import evaluate, guides, nets, priors
from bmr_jax.data import Dataset
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


METHODS: Registry[Method] = Registry("method")
for _m in (
    Method("flat_map", "flat", "delta", lr=1e-3, dropout=0.2, eval_samples=1),
    Method("flat_ff", "flat", "mean_field", lr=5e-3),
    Method("tiered_ff", "horseshoe", "mean_field", lr=5e-3),
):
    METHODS.register(_m.name, _m)


@dataclass
class Setup:
    """A Bayesian network, its guide and its trainer, ready to run blocks."""

    method: Method
    bnet: BayesianNetwork
    guide: guides.Guide
    trainer: SVITrainer


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
    )
    return Setup(method, bnet, guide, trainer)


def run(
    setup: Setup,
    dataset: Dataset,
    *,
    blocks: int,
    steps_per_block: int,
    eval_samples: int | None = None,
    seed: int = 137,
    progress: bool = True,
    on_block: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Trains block by block, evaluating on the test split after each block.

    Returns one record per block: ``block``, ``step``, ``loss`` (mean per-datum negative ELBO
    of the block), ``acc``, ``nll``, ``ece``, ``lpd``, ``train_seconds``, ``eval_seconds``.
    """
    samples = eval_samples or setup.method.eval_samples
    predictive = evaluate.make_predictive(setup.bnet, setup.guide)
    state = setup.trainer.init()
    key = jax.random.key(seed + 1)
    records = []
    for block in range(1, blocks + 1):
        state, losses = setup.trainer.run_block(
            state, steps_per_block, progress=progress, description=f"block {block}/{blocks}"
        )
        start = time.perf_counter()
        key, eval_key = jax.random.split(key)
        probs = evaluate.predictive_probs(
            setup.bnet,
            setup.guide,
            setup.trainer.params(state),
            dataset.test.images,
            key=eval_key,
            samples=samples,
            predictive=predictive,
        )
        record = {
            "block": block,
            "step": block * steps_per_block,
            "loss": float(losses.mean()),
            **evaluate.classification_metrics(probs, dataset.test.labels),
            "train_seconds": setup.trainer.last_block_seconds,
            "eval_seconds": time.perf_counter() - start,
        }
        records.append(record)
        if on_block:
            on_block(record)
    setup.state = state
    return records
