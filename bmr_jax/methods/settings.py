"""What a run does block by block: the ``train``, ``eval`` and ``bmr`` settings.

These are the config file's sections (``bmr_jax.runs.config``) and the arguments of the Python API
(:func:`bmr_jax.methods.build`, :func:`bmr_jax.methods.run`) alike, checked where they are
made: an impossible value raises :class:`bmr_jax.errors.ConfigError` naming ``section.key``,
and every allowed name comes from its registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmr_jax.errors import ConfigError
from bmr_jax.validate import check_fields, setting


def epoch_range(key: str, value) -> tuple[float, float]:
    """``(start, end)`` from a two-number list with ``0 <= start <= end``."""
    numbers = isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ok = numbers and len(value) == 2
    if not ok or not 0 <= value[0] <= value[1]:
        raise ConfigError(f"{key}: expected [start, end] epochs with 0 <= start <= end, "
                          f"got {value!r}")  # fmt: skip
    return float(value[0]), float(value[1])


def _rules() -> list[str]:
    from bmr_jax.bmr.decide import RULES

    return RULES.names()


@dataclass(frozen=True)
class TrainSettings:
    """``train.*``: the schedule and the optimiser.

    Attributes:
      blocks: training blocks (BMR reduces between blocks).
      steps_per_block: SVI steps per block.
      batch_size: minibatch size.
      lr: learning rate; ``None`` takes the method's reference value.
      keep_checkpoints: how many checkpoints a run folder keeps (the newest).
      data_parallel: split every minibatch over all devices (JAX SPMD).
      kl: ``analytic`` (the Gaussian KL in closed form where the guide allows) or
        ``monte_carlo`` (one-sample estimate from the ELBO's draw: the reference code's,
        METHOD.md 4.7).
      minibatches: ``epochs`` (a fresh permutation every epoch, cut into batches) or
        ``random`` (every step an independent subsample without replacement: the reference
        code's, METHOD.md 4.7).
      kl_warmup: ``[start, end]`` epochs over which the KL term's weight rises linearly from
        0 to 1 (0 before ``start``; ``[0, 0]``: always 1); ``None`` takes the method's (Sparse
        VD: ``[5, 20]``, as its paper; the others: none).
      optimizer: ``adabelief`` (ours) or ``adam`` (the Sparse VD paper's, beta1 0.9).
      lr_schedule: ``constant`` or ``linear_second_half``: the rate held for the first half of
        the run's steps, then falling linearly to 0 at the last (the Sparse VD paper's code);
        such a run cannot be extended (its total of steps is the decay's).
      on_nonfinite: ``stop`` (an error naming block and step) or ``rollback`` (back to the
        last good state with the learning rate times ``rollback_factor``, at most
        ``max_rollbacks`` times).
    """

    blocks: int = setting(50, minimum=1)
    steps_per_block: int = setting(500, minimum=1)
    batch_size: int = setting(120, minimum=1)
    lr: float | None = setting(None, above=0)
    keep_checkpoints: int = setting(3, minimum=1)
    data_parallel: bool = setting(False)
    kl: str = setting("analytic", choices=lambda: ["analytic", "monte_carlo"])
    minibatches: str = setting("epochs", choices=lambda: ["epochs", "random"])
    kl_warmup: list | None = setting(None)
    optimizer: str = setting("adabelief", choices=lambda: ["adabelief", "adam"])
    lr_schedule: str = setting("constant", choices=lambda: ["constant", "linear_second_half"])
    on_nonfinite: str = setting("stop", choices=lambda: ["stop", "rollback"])
    rollback_factor: float = setting(0.5, above=0, below=1)
    max_rollbacks: int = setting(3, minimum=0)

    def __post_init__(self):
        check_fields(self, "train")
        if self.blocks * self.steps_per_block >= 2**31:  # the step counter is int32
            raise ConfigError(f"train.blocks x train.steps_per_block: {self.blocks} x "
                              f"{self.steps_per_block} steps is more than the 2^31 - 1 a run "
                              "can count")  # fmt: skip
        if self.kl_warmup is not None:
            object.__setattr__(self, "kl_warmup", epoch_range("train.kl_warmup", self.kl_warmup))


@dataclass(frozen=True)
class GuideSettings:
    """``guide.*``: where the approximate posterior starts (``bmr_jax.bayes.guides``).

    Attributes:
      init: ``network`` (ours: the network's own initialisation) or ``paper`` (the reference
        code's: every location uniform in ``[-init_radius, init_radius]``, METHOD.md 4.7).
      init_scale: the posterior standard deviations' start; ``None`` takes the method's
        (Sparse VD: exp(-5)) or else the start's own (1e-2 for ``network``, 0.1 for ``paper``).
      init_radius: the half-width of the ``paper`` start's uniform draw (2).
      estimator: ``reparam`` (one weight draw per step, shared by the minibatch: the paper's)
        or ``local`` (the local reparameterisation trick, one draw per pre-activation and
        datum: ``bmr_jax.bayes.local``; mean-field guides only) or ``local_dense`` (local on
        the dense layers, a shared weight draw on convolutions: faster than ``local`` on
        conv nets, the same objective as ``reparam``); ``None`` takes the method's
        (``local`` for Sparse VD, ``reparam`` for the others).
      sparse_vd_clip: Sparse VD with the local estimator: ``block`` (ours: weights with
        ``log alpha > 3`` masked between blocks, mean and noise) or ``step`` (its paper's code:
        their means zeroed at every step, their noise kept in dense layers;
        :mod:`bmr_jax.bayes.local`).
      sparse_vd_variance: Sparse VD with the local estimator: the noise variance ``sigma^2``
        (``sigma``, ours) or ``exp(clip(log alpha)) theta^2`` (``alpha``, its paper's code).
    """

    init: str = setting("network", choices=lambda: ["network", "paper"])
    init_scale: float | None = setting(None, above=0)
    init_radius: float = setting(2.0, above=0)
    estimator: str | None = setting(None, choices=lambda: ["reparam", "local", "local_dense"])
    sparse_vd_clip: str = setting("block", choices=lambda: ["block", "step"])
    sparse_vd_variance: str = setting("sigma", choices=lambda: ["sigma", "alpha"])

    def __post_init__(self):
        check_fields(self, "guide")

    def scale(self, method_scale: float | None = None) -> float:
        """The posterior standard deviations' start (``method_scale``: the method's own)."""
        if self.init_scale is not None:
            return self.init_scale
        if method_scale is not None:
            return method_scale
        return 0.1 if self.init == "paper" else 1e-2


@dataclass(frozen=True)
class EvalSettings:
    """``eval.*``: the test metrics.

    Attributes:
      samples: posterior samples; ``None`` takes the method's value (100; 1 for MAP).
      chunk_size: test images per evaluation chunk (memory bound).
      every: evaluate after every k-th block and after the last (others record ``None``).
      shrink: evaluate on the network without the units the masks leave unused
        (:mod:`bmr_jax.inference.shrunk`): the same metrics to float tolerance, cheaper as
        the network prunes.
      mean_network: also evaluate the deterministic network at the posterior median with the
        masks applied (no noise), as the Sparse VD paper reports its test error; recorded as
        ``mean_acc``, ``mean_nll``, ``mean_ece`` and ``mean_lpd`` beside the Bayesian ones.
    """

    samples: int | None = setting(None, minimum=1)
    chunk_size: int = setting(1000, minimum=1)
    every: int = setting(1, minimum=1)
    shrink: bool = setting(True)
    mean_network: bool = setting(False)

    def __post_init__(self):
        check_fields(self, "eval")


@dataclass(frozen=True)
class BmrSettings:
    """``bmr.*``: the reduce step of a BMR method (ignored by the others).

    Attributes:
      warmup_blocks: blocks of plain SVI before the first reduce (METHOD.md 4.5: one).
      refit_blocks: the last blocks of the run train with the masks frozen (no between-blocks
        step): a final refit of the pruned network (0: prune until the end, the paper's).
      rule: a registered decision rule replacing the method's (``bmr_jax.bmr.RULES``).
      rule_options: keyword arguments of that rule (e.g. ``{threshold: 1.0}`` for
        ``evidence``, ``{schedule: {final: 0.9, end: 10}}`` for ``target``).
      inclusion_rate: ``layer`` | ``alive`` | ``all``: which weights the spike-and-slab
        rule's learned inclusion rate counts once some are pruned (METHOD.md 4.4.1; ``all``
        is the reference code's counting, METHOD.md 4.7; ``bmr_jax.bmr.decide.spike_and_slab``).
      within: structured BMR (``bmr_group``, ``bmr_multipliers``) only: a registered
        weight-wise rule applied, with its default options, inside the units the unit rule
        keeps (structured first, then unstructured); ``None``: whole units only.
      prune_classifier: the decision rule may prune the classifier's weights too (the last
        layer; METHOD.md 4.4 leaves it out, the default), for the weight-wise rules of
        BMR-S&S, IVON + BMR and GMP. Sparse VD prunes every layer whatever this says.
    """

    warmup_blocks: int = setting(1, minimum=1)
    refit_blocks: int = setting(0, minimum=0)
    rule: str | None = setting(None, choices=_rules)
    rule_options: dict = setting(factory=dict)
    inclusion_rate: str = setting("layer", choices=lambda: ["layer", "alive", "all"])
    within: str | None = setting(None, choices=_rules)
    prune_classifier: bool = setting(False)

    def __post_init__(self):
        check_fields(self, "bmr")
