"""Experiment configuration: a typed schema, YAML files with defaults, ``key=value`` overrides.

A config file is YAML with the keys below; ``defaults: [other.yaml, ...]`` (paths relative to
the file) are loaded first and the file's own keys override theirs, so shared settings live in
one place. Any key can be overridden from the command line as ``section.key=value`` (the value
is parsed as YAML: ``train.blocks=5``, ``net.preset=small``, ``train.lr=null``).

Every error -- unknown key, wrong type, impossible value, unknown name -- raises
:class:`ConfigError` with one line naming the key and what is allowed (exit status 2 on the
command line).

Keys (defaults in brackets):

- ``seed`` [137]: seeds initialisation, data order and posterior sampling (0 <= seed < 2^32).
- ``plugins`` [[]]: Python modules imported before the rest of the config is checked, so that
  priors (or networks, datasets, methods) they register can be named (docs/extending.md);
  found on Python's import path (installed packages, ``PYTHONPATH``) or in the current
  directory.
- ``prior`` [null]: a registered prior replacing the method's own (flat | horseshoe |
  log_uniform | ...).
- ``prior_options`` [{}]: keyword arguments of the prior (the method's own, or ``prior``'s),
  added to the method's own options: ``{weight_wise: true}`` gives the horseshoe a scale per
  weight, ``{tau0: 0.1}`` sets its global scale, ``{fixed_precision: 1.0}`` fixes the flat
  prior's layer scales (``bmr_jax.bayes.priors``; the reference configs set none).
- ``method`` [bmr_ss]: flat_map | flat_ff | tiered_ff | bmr_ss | bmr_rhs | bmr_units | bmr_group
  | bmr_multipliers | l1_filters | sparse_vd | gmp | ivon_bmr (BMR-S&S on a posterior learned
  by IVON; ``train.lr`` is IVON's, 0.1). ``bmr_group`` and ``bmr_multipliers`` remove whole
  units (neurons, channels, heads): scored by the summed Delta F of their weights, or by the
  Delta F of a per-unit output multiplier; ``l1_filters`` removes the units of smallest L1
  kernel norm along a target schedule (``bmr_jax.methods.table``).
- ``data.name`` [mnist_mini]: mnist_mini | mnist | fashion_mnist | cifar10 | cifar100.
- ``data.padding`` [black]: black | zero: how images are padded to a network's input size --
  with black pixels before standardising, or with 0 after it (the reference code's order,
  METHOD.md 4.7; the reference configs select it).
- ``data.validation`` [0]: hold out this many training images (a fixed random subset, the
  same for every seed and method) and report the run's metrics on them instead of the test
  set: what every choice of a schedule, a rate or a threshold is made on
  (``bmr_jax.data.hold_out_validation``); 0 evaluates on the test set.
- ``net.name`` [lenet5]: mlp | lenet5 | lenet_300_100 | lenet5_caffe | vit | mixer.
- ``net.preset`` [paper]: paper | small.
- ``guide.init`` [network]: network | paper: where the posterior starts -- the network's own
  initialisation (ours) or, as the reference code does, every location uniform in
  [-init_radius, init_radius] in unconstrained space (METHOD.md 4.7; the reference configs
  select it).
- ``guide.init_scale`` [null]: the posterior standard deviations' start; null takes the
  start's own (0.01 for network, 0.1 for paper, the reference value).
- ``guide.init_radius`` [2.0]: half-width of the paper start's uniform draw (the reference: 2).
- ``guide.estimator`` [null]: reparam | local | local_dense: the ELBO's gradient estimator --
  one weight draw per step shared by the minibatch (the BMR paper's, the reference value), the
  local reparameterisation trick, one draw per pre-activation and datum (mean-field guides;
  ``bmr_jax.bayes.local``), or the trick on the dense layers only (convolutions keep the weight
  draw); null takes the method's (local for sparse_vd, else reparam).
- ``guide.sparse_vd_clip`` [block]: block | step: Sparse VD with a local estimator -- weights
  with log alpha > 3 masked between blocks, mean and noise (ours), or their means zeroed at
  every step with their noise kept in dense layers (its paper's code; ``bmr_jax.bayes.local``).
- ``guide.sparse_vd_variance`` [sigma]: sigma | alpha: Sparse VD's noise variance, sigma^2
  (ours) or exp(log alpha clipped to [-8, 8]) theta^2 (its paper's code).
- ``train.blocks`` [50]: training blocks (BMR reduces between blocks).
- ``train.steps_per_block`` [500]: SVI steps per block.
- ``train.batch_size`` [120]: minibatch size.
- ``train.lr`` [null]: learning rate; null takes the method's reference value.
- ``train.kl`` [analytic]: analytic | monte_carlo: the KL term of the ELBO in closed form
  (mean-field guides) or estimated from the step's one posterior draw (the reference code's,
  METHOD.md 4.7; the reference configs select it).
- ``train.kl_warmup`` [null]: ``[start, end]`` epochs: the KL term's weight is 0 before
  ``start`` and rises linearly to 1 at ``end`` (``bmr_jax.inference.kl_warmup``); null takes
  the method's (``[5, 20]`` for sparse_vd, else none); ``[0, 0]``: always 1.
- ``train.optimizer`` [adabelief]: adabelief | adam (the Sparse VD paper's).
- ``train.lr_schedule`` [constant]: constant | linear_second_half: the rate held for the first
  half of the run's steps, then lowered linearly to 0 at the last (the Sparse VD paper's code);
  a run under it cannot be extended to more ``train.blocks``.
- ``train.minibatches`` [epochs]: epochs | random: a fresh permutation per epoch cut into
  batches, or an independent subsample every step (the reference code's, METHOD.md 4.7; the
  reference configs select it).
- ``train.data_parallel`` [false]: split every minibatch over all devices (JAX SPMD; the batch
  size must be divisible by the device count), parameters replicated.
- ``train.keep_checkpoints`` [3]: how many checkpoints a run folder keeps (the newest; the
  final one stays after the run, so that ``train.blocks`` can be raised to extend it).
- ``train.on_nonfinite`` [stop]: stop | rollback: on a NaN/inf loss or parameter, stop with
  an error naming the block and step (the last good checkpoint stays), or go back to the last
  good state with a lower learning rate.
- ``train.rollback_factor`` [0.5]: what a rollback multiplies the learning rate by.
- ``train.max_rollbacks`` [3]: rollbacks allowed in one run before it stops with the error.
- ``eval.samples`` [null]: posterior samples for the test metrics; null takes the method's
  value (100; 1 for MAP).
- ``eval.chunk_size`` [1000]: test images per evaluation chunk (memory bound).
- ``bmr.warmup_blocks`` [1]: blocks of plain SVI before the first reduce step (METHOD.md 4.5's
  warm-up is one block).
- ``bmr.refit_blocks`` [0]: the run's last blocks train with the masks frozen (no reduce or
  other between-blocks step): a final refit of the pruned network; 0 prunes until the end.
- ``bmr.rule`` [null]: the decision rule of a BMR method, replacing its own: a name in
  ``bmr_jax.bmr.RULES`` (spike_and_slab | evidence | target | unit_spike_and_slab, and any a
  plugin registers).
- ``bmr.rule_options`` [{}]: keyword arguments of the rule (``{threshold: 1.0}`` for evidence,
  ``{schedule: {final: 0.9, begin: 2, end: 10}}`` for target, ``{rho: 0.5}`` for
  unit_spike_and_slab); with no ``bmr.rule`` they apply to the method's own rule.
- ``bmr.inclusion_rate`` [layer]: layer | alive | all: which weights the spike-and-slab rule's
  learned inclusion rate counts once some are pruned -- the whole layer with pruned ones as
  excluded (q = 0), only the weights still alive, or every entry with its current Delta F
  (the reference code's counting, METHOD.md 4.7; the reference configs select it).
- ``bmr.within`` [null]: bmr_group and bmr_multipliers only: a weight-wise decision rule
  (spike_and_slab | evidence | target ...) applied with its default options inside the units
  the unit rule keeps -- whole units first, then single weights; null removes whole units.
- ``bmr.prune_classifier`` [false]: the weight-wise decision rules (BMR-S&S, IVON + BMR, GMP's
  magnitude ranking) may prune the classifier's weights too; METHOD.md 4.4 keeps the last
  layer whole (Sparse VD prunes every layer whatever this says; refused for the other methods).
- ``eval.every`` [1]: test metrics after every k-th block and after the last; the other
  blocks record ``null`` for acc/nll/ece/lpd (a 100-sample evaluation of a LeNet-5 costs
  about as much as a 500-step block on a 2-core CPU).
- ``eval.shrink`` [true]: evaluate on the network without the units the masks leave unused
  (``bmr_jax.inference.shrunk``): every posterior draw as before, only the forward pass on the
  smaller network, so the metrics agree to float tolerance and an evaluation costs less as
  the network prunes (false: always the full network). It shrinks once that halves the
  network's FLOPs (a new structure costs a compilation).
- ``eval.mean_network`` [false]: also evaluate the deterministic network at the posterior
  median with the masks applied, as the Sparse VD paper reports its test error: ``mean_acc``,
  ``mean_nll``, ``mean_ece``, ``mean_lpd`` beside the Bayesian metrics.
- ``tracking.tensorboard`` [false]: write TensorBoard event files to ``RUN/tensorboard`` (the
  loss of every step, every block's metrics and per-layer pruned fractions;
  ``bmr_jax.runs.tracking``, the extra ``bmr-jax[tracking]``).
- ``tracking.mlflow`` [null]: an MLflow tracking URI (a server, or ``sqlite:///mlflow.db``) to
  log the params, every block's metrics and the final artefacts to.
- ``tracking.mlflow_experiment`` [bmr-jax]: the MLflow experiment the run goes under.

The ``tracking`` keys, ``train.blocks`` and ``train.keep_checkpoints`` may change when a run is
resumed; any other change makes it another run (``bmr-jax run`` refuses its folder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bmr_jax.errors import ConfigError
from bmr_jax.methods.settings import BmrSettings, EvalSettings, GuideSettings, TrainSettings
from bmr_jax.runs.config_files import import_plugins, load_yaml, merge, parse_override, read_yaml
from bmr_jax.runs.tracking_settings import TrackingSettings
from bmr_jax.validate import check_bounds, check_fields, check_type, setting

__all__ = ["Config", "ConfigError", "DataConfig", "NetConfig", "differing_keys", "dump_config",
           "flat_settings", "from_dict", "load_config", "parse_override"]  # fmt: skip


def _names(registry: str):
    def names() -> list[str]:
        from bmr_jax import data, methods, nets
        from bmr_jax.bayes import priors

        return {"prior": priors.PRIORS.names, "method": methods.METHODS.names,
                "data": data.list_datasets, "net": nets.list_nets,
                "preset": lambda: list(nets.PRESETS)}[registry]()  # fmt: skip

    return names


@dataclass(frozen=True)
class DataConfig:
    name: str = setting("mnist_mini", choices=_names("data"))
    padding: str = setting("black", choices=lambda: ["black", "zero"])
    validation: int = setting(0, minimum=0)

    def __post_init__(self):
        check_fields(self, "data")


@dataclass(frozen=True)
class NetConfig:
    name: str = setting("lenet5", choices=_names("net"))
    preset: str = setting("paper", choices=_names("preset"))

    def __post_init__(self):
        check_fields(self, "net")


@dataclass(frozen=True)
class Config:
    seed: int = setting(137, minimum=0, below=2**32)  # JAX's PRNG seeds are 32-bit
    plugins: tuple[str, ...] = ()
    method: str = setting("bmr_ss", choices=_names("method"))
    prior: str | None = setting(None, choices=_names("prior"))
    prior_options: dict = setting(factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    guide: GuideSettings = field(default_factory=GuideSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    bmr: BmrSettings = field(default_factory=BmrSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def __post_init__(self):
        from bmr_jax.methods import configured

        for name in ("seed", "method", "prior", "prior_options"):
            f = next(f for f in dataclasses.fields(self) if f.name == name)
            check_bounds(name, check_type(name, getattr(self, name), str(f.type)), f.metadata)
        # the bmr section fits the method, the prior options fit the prior
        configured(self.method, self.bmr, self.prior, self.prior_options)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["plugins"] = list(self.plugins)
        return out


_SECTIONS = {"data": DataConfig, "net": NetConfig, "guide": GuideSettings, "train": TrainSettings,
             "eval": EvalSettings, "bmr": BmrSettings, "tracking": TrackingSettings}  # fmt: skip


def _build(cls, values: dict, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    if not prefix and "plugins" in values:  # first: what they register may be named below
        kwargs["plugins"] = import_plugins(values["plugins"])
        values = {k: v for k, v in values.items() if k != "plugins"}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(
                f"{key}: unknown key; allowed: {', '.join(prefix + f for f in fields)}"
            )
        section = _SECTIONS.get(name) if not prefix else None
        if section is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of {name} keys")
            kwargs[name] = _build(section, value, f"{name}.")
        else:
            kwargs[name] = value
    return cls(**kwargs)  # the dataclasses check their fields (bmr_jax.validate)


def from_dict(values: dict) -> Config:
    """A validated :class:`Config` from nested dicts (missing keys take their defaults)."""
    return _build(Config, values, "")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Reads ``path`` (with its defaults), applies ``overrides`` and validates the result."""
    values = read_yaml(Path(path)) if path is not None else {}
    for override in overrides:
        values = merge(values, parse_override(override))
    return from_dict(values)


def flat_settings(values: dict, prefix: str = "") -> dict:
    """A config's dict (:meth:`Config.to_dict`) keyed ``section.key`` as overrides name them."""
    out = {}
    for key, value in values.items():
        if key in _SECTIONS and not prefix and isinstance(value, dict):
            out.update(flat_settings(value, f"{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(config: Config, yaml_text: str) -> list[str]:
    """The keys (``train.blocks``, ...) in which ``yaml_text`` (a run folder's config.yaml)
    resolves to something else than ``config``; keys added to the schema since it was written
    take their defaults. ``["config.yaml"]`` if it no longer resolves at all."""
    try:
        old = from_dict(load_yaml(yaml_text) or {})
    except (ConfigError, yaml.YAMLError):
        return ["config.yaml"]
    mine, theirs = flat_settings(config.to_dict()), flat_settings(old.to_dict())
    return [k for k in mine if mine[k] != theirs.get(k)]


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML (what a run folder's config.yaml holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
