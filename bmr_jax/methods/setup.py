"""A method built on a dataset: network, prior, model, guide, trainer and between-blocks step."""

from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from numpyro.infer import Trace_ELBO

from bmr_jax import nets
from bmr_jax.bayes import guides, priors
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.data import Dataset
from bmr_jax.errors import ConfigError
from bmr_jax.inference import parallel
from bmr_jax.inference.ivon_trainer import IVONTrainer
from bmr_jax.inference.train import SVITrainer
from bmr_jax.methods.between import BetweenBlocks, make_between_blocks
from bmr_jax.methods.settings import BmrSettings, GuideSettings, TrainSettings
from bmr_jax.methods.table import Method, configured


@dataclass
class Setup:
    """A Bayesian network, its guide, its trainer and its between-blocks step, with the
    settings it was built for, ready for :func:`bmr_jax.methods.run`."""

    method: Method
    bnet: BayesianNetwork
    guide: guides.Guide
    trainer: SVITrainer  # or its IVONTrainer subclass
    between: BetweenBlocks
    train: TrainSettings
    bmr: BmrSettings
    seed: int
    sequential: bool = True  # the network's layers read each other in sequence
    state: object = None  # the TrainState after :func:`run`
    masks: dict | None = None  # the pruning masks after :func:`run`
    gamma: dict | None = None  # the prior multipliers after :func:`run`


# the between-blocks steps whose weight-wise masks may cover the classifier as well
CLASSIFIER_PRUNING = ("spike_and_slab", "magnitude")


def build(method: str | Method, dataset: Dataset, *, net: str = "lenet5", preset: str = "paper",
          train: TrainSettings = TrainSettings(), bmr: BmrSettings = BmrSettings(),
          prior: str | None = None, seed: int = 137, guide: GuideSettings = GuideSettings(),
          optimizer: optax.GradientTransformation | None = None, mesh=None,
          prior_options: dict | None = None) -> Setup:  # fmt: skip
    """Builds network, prior, model, guide, trainer and between-blocks step for ``method``
    (a registered name or a :class:`Method`, with ``bmr``, ``prior`` and ``prior_options``
    applied as :func:`configured` does) on ``dataset``; ``train`` gives the batch size,
    learning rate (``None``: the method's), the KL estimate, the minibatch scheme and data
    parallelism (over every device, or over ``mesh``, a
    ``bmr_jax.inference.parallel.data_mesh``); ``guide`` where the posterior starts. Bad
    settings raise ``ConfigError``."""
    if not isinstance(train, TrainSettings) or not isinstance(bmr, BmrSettings):
        raise ConfigError("build: train and bmr must be TrainSettings and BmrSettings")
    if not isinstance(guide, GuideSettings):
        raise ConfigError("build: guide must be GuideSettings")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    method = configured(method, bmr, prior, prior_options)
    if bmr.prune_classifier and method.between not in CLASSIFIER_PRUNING:
        raise ConfigError(f"bmr.prune_classifier: method {method.name!r} has no weight-wise "
                          "pruning of the classifier (bmr_ss, ivon_bmr and gmp have)")
    spec = nets.get_net_spec(net)
    module = nets.create_net(net, dataset.num_classes, dataset.image_shape, preset,
                             rngs=nnx.Rngs(seed), dropout=method.dropout)  # fmt: skip
    bnet = BayesianNetwork.from_module(
        module, dataset.image_shape, priors.create_prior(method.prior, **method.prior_options),
        prune_classifier=bmr.prune_classifier,
    )
    if method.multipliers is not None:
        bnet = _with_unit_multipliers(bnet, spec.sequential, method, guide)
    posterior = _make_guide(method, bnet, dataset, guide, seed)
    estimator = method.estimator if guide.estimator is None else guide.estimator
    if estimator != "reparam" and not isinstance(posterior, guides.MeanFieldGuide):
        raise ConfigError(f"guide.estimator: {estimator} needs a mean-field guide; method "
                          f"{method.name!r} has {posterior.name!r}")  # fmt: skip
    if train.kl == "monte_carlo" and isinstance(bnet.prior, priors.LogUniformPrior):
        raise ConfigError("train.kl: monte_carlo needs a proper prior; the log-uniform prior "
                          "(Sparse VD) takes its KL approximation (analytic)")  # fmt: skip
    if train.batch_size > len(dataset.train):
        raise ConfigError(f"train.batch_size: {train.batch_size} is more than the "
                          f"{len(dataset.train)} training images")  # fmt: skip
    _check_sparse_vd_options(guide, estimator, bnet)
    if mesh is None and train.data_parallel:
        mesh = parallel.data_mesh()
    if method.trainer == "ivon":
        trainer = _ivon_trainer(method, bnet, posterior, dataset, train, estimator, optimizer,
                                seed, mesh)  # fmt: skip
    else:
        trainer = _svi_trainer(method, bnet, posterior, dataset, train, guide, estimator,
                               optimizer, seed, mesh)  # fmt: skip
    try:
        between = make_between_blocks(method, trainer, sequential=spec.sequential)
    except ValueError as e:
        raise ConfigError(f"method {method.name!r}: {e}") from None
    return Setup(method, bnet, posterior, trainer, between, train, bmr, seed, spec.sequential)


def _svi_trainer(method, bnet, posterior, dataset, train: TrainSettings, guide: GuideSettings,
                 estimator, optimizer, seed, mesh) -> SVITrainer:  # fmt: skip
    """The SVI trainer of ``method`` under the ``train`` and ``guide`` settings (the
    optimiser: ``optimizer``, else ``train.optimizer`` under ``train.lr_schedule``)."""
    lr = method.lr if train.lr is None else train.lr
    return SVITrainer(bnet, posterior, dataset.train, optimizer=optimizer or _optimizer(train, lr),
                      lr=lr, batch_size=train.batch_size, seed=seed, mesh=mesh,
                      elbo=Trace_ELBO() if train.kl == "monte_carlo" else None,
                      minibatches=train.minibatches, estimator=estimator,
                      local_options={"clip": guide.sparse_vd_clip,
                                     "variance": guide.sparse_vd_variance},
                      kl_warmup=method.kl_warmup if train.kl_warmup is None
                      else train.kl_warmup)  # fmt: skip


def _check_sparse_vd_options(guide: GuideSettings, estimator: str, bnet) -> None:
    """Refuses ``guide.sparse_vd_clip`` / ``sparse_vd_variance`` where they mean nothing:
    they act in the local estimator, on a log-uniform prior's ``log alpha``."""
    chosen = [f"guide.{key}: {value}" for key, value, ours in (
        ("sparse_vd_clip", guide.sparse_vd_clip, "block"),
        ("sparse_vd_variance", guide.sparse_vd_variance, "sigma")) if value != ours]  # fmt: skip
    if chosen and (estimator == "reparam" or not isinstance(bnet.prior, priors.LogUniformPrior)):
        raise ConfigError(f"{chosen[0]}: needs Sparse VD's log-uniform prior and a local "
                          f"estimator (guide.estimator: local or local_dense), not {estimator}")


def _optimizer(train: TrainSettings, lr: float) -> optax.GradientTransformation | None:
    """``train.optimizer`` at ``lr`` under ``train.lr_schedule``, the base rate kept in the
    state (``optax.inject_hyperparams``) so that a rollback can lower it; ``None`` for the
    trainer's own default (AdaBelief, constant rate), whose state older checkpoints hold. The
    Sparse VD paper's code holds Adam's rate for the first half of its epochs and lowers it
    linearly to 0 at the last (Molchanov et al. 2017): ``lr * min(1, 2 - 2 t / T)`` at step
    ``t`` of ``T``."""
    if (train.optimizer, train.lr_schedule) == ("adabelief", "constant"):
        return None
    base = {"adabelief": optax.adabelief, "adam": optax.adam}[train.optimizer]
    total = train.blocks * train.steps_per_block

    def factor(step):
        return jnp.clip(2.0 - 2.0 * step / total, 0.0, 1.0)

    def make(learning_rate):
        if train.lr_schedule == "constant":
            return base(learning_rate)
        return optax.chain(base(learning_rate), optax.scale_by_schedule(factor))

    return optax.inject_hyperparams(make)(learning_rate=lr)


def _with_unit_multipliers(bnet: BayesianNetwork, sequential: bool, method: Method,
                           guide: GuideSettings) -> BayesianNetwork:  # fmt: skip
    """``bnet`` whose prior gives every removable unit a multiplier with the method's prior
    (``UnitScaledPrior``); the ``paper`` start is refused for multipliers on an interval."""
    from bmr_jax.bayes.priors.unit_scaled import UnitScaledPrior
    from bmr_jax.bayes.units import network_units

    units = network_units(bnet, sequential=sequential)
    if not units:
        raise ConfigError("method: the network has no units to give a multiplier")
    if guide.init == "paper" and method.multipliers == "log_uniform":
        raise ConfigError("guide.init: paper draws every latent in unconstrained space; "
                          f"method {method.name!r} has multipliers on an interval")  # fmt: skip
    return replace(bnet, prior=UnitScaledPrior(bnet.prior, units, theta_prior=method.multipliers))


def _ivon_trainer(method, bnet, posterior, dataset, train: TrainSettings, estimator, optimizer,
                  seed, mesh) -> IVONTrainer:  # fmt: skip
    """IVON's trainer for ``method``, refusing the settings it has no meaning for."""
    refused = {f"guide.estimator: {estimator}": estimator != "reparam",
               "train.kl: monte_carlo": train.kl == "monte_carlo",
               "train.kl_warmup": train.kl_warmup is not None,
               "an optimizer": optimizer is not None,
               f"train.optimizer: {train.optimizer}": train.optimizer != "adabelief",
               f"train.lr_schedule: {train.lr_schedule}": train.lr_schedule != "constant",
               "a write-back of the reduced posterior": method.write_back}  # fmt: skip
    for what, given in refused.items():
        if given:
            raise ConfigError(f"{what}: method {method.name!r} trains with IVON, which takes "
                              "the loss's gradient at a posterior draw (no ELBO estimator)")
    try:
        return IVONTrainer(bnet, posterior, dataset.train,
                           lr=method.lr if train.lr is None else train.lr,
                           batch_size=train.batch_size, seed=seed, mesh=mesh,
                           minibatches=train.minibatches)  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"method {method.name!r}: {e}") from None


GUIDE_INIT_STREAM = 0x9D17  # folded into the seed's key for the ``paper`` start


def _make_guide(method, bnet, dataset, settings: GuideSettings, seed: int) -> guides.Guide:
    """The method's guide at the start ``settings`` names (``bmr_jax.bayes.guides``): the
    network's initialisation, or the reference code's uniform draw from the seed."""
    init = bnet.init_latents()
    x0, y0 = jnp.asarray(dataset.train.images[:2]), jnp.asarray(dataset.train.labels[:2])
    sites = guides.latent_sites(bnet.model, x0, y0, init_values=init)
    if settings.init == "paper":
        key = jax.random.fold_in(jax.random.key(seed), GUIDE_INIT_STREAM)
        init = guides.uniform_start(sites, key, settings.init_radius)
    scale = settings.scale(method.init_scale if settings.init == "network" else None)
    return guides.GUIDES.get(method.guide)(sites, init, init_scale=scale)
