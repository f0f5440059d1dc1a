"""The paper's methods as (prior, guide, optimiser settings, between-blocks step).

METHOD.md sections 3 and 6:

==========  ===========  ==========  ======  =======  ============  ==============
method      prior        guide       lr      dropout  eval samples  between blocks
==========  ===========  ==========  ======  =======  ============  ==============
flat_map    flat         delta       1e-3    0.2      1             nothing
flat_ff     flat         mean-field  5e-3    0        100           nothing
tiered_ff   horseshoe    mean-field  5e-3    0        100           nothing
bmr_ss      flat         mean-field  1e-2    0        100           spike_and_slab
bmr_rhs     flat         mean-field  1e-2    0        100           rhs
bmr_units   flat         matrix-n.   1e-2    0        100           units
bmr_group   flat         mean-field  1e-2    0        100           groups
bmr_mult.   flat, theta  mean-field  1e-2    0        100           multipliers
bmrs        flat, SBP    mean-field  1e-3    0        100           multipliers
l1_filters  flat         delta       1e-3    0        1             filters
sparse_vd   log-uniform  mean-field  1e-3    0        100           sparse_vd
gmp         flat         delta       1e-3    0        1             magnitude
ivon_bmr    flat, c = 1  IVON        0.1     0        100           spike_and_slab
==========  ===========  ==========  ======  =======  ============  ==============

BMR-S&S (METHOD.md 4.5) is Flat-FF with a reduce step before every block after the warm-up:
Delta F of every prunable weight, the spike-and-slab rule, pruned weights' prior multipliers
set to 1e-12, SVI continued under the reduced prior with the same optimiser state.
``bmr_units`` (ours, not in the paper's grid) is structured BMR-S&S on a matrix-normal guide
(METHOD.md 4.3): pruning removes neurons and conv channels. Two more structured methods of ours
remove whole units (neurons, channels, heads, feed-forward units) from a mean-field guide:
``bmr_group`` scores a unit by the sum of its incoming and outgoing weights' spike Delta F
(:mod:`bmr_jax.bmr.groups`); ``bmr_multipliers`` (``bmr_mult.`` above) gives every unit a
multiplier ``theta_j ~ N(0, 1)`` on its output (:mod:`bmr_jax.bayes.priors.unit_scaled`) and
scores the spike on ``theta_j`` alone. Both learn a per-layer unit inclusion rate with the
spike-and-slab rule, and ``bmr.within`` may add a weight-wise rule inside the kept units.
``bmrs`` is their closest published relative, written from its paper (BMRS_U; Wright, Igel,
Selvan 2024): Structured Bayesian Pruning's log-uniform multiplier on every unit's output with
a truncated log-normal posterior (Neklyudov et al. 2017; :mod:`bmr_jax.bmr.bmrs`), a unit
pruned once the reduction of its prior to ``[2^-23, 2^-8]`` gains evidence (``Delta F >= 0``,
the evidence rule), at BMRS's learning rate 1e-3 (with AdaBelief here, Adam there).
``l1_filters`` is their structured magnitude baseline (Li et al. 2017;
:mod:`bmr_jax.methods.between.filters`): the units with the smallest L1 kernel norm go, along
a target schedule (half of each layer's units by block 10 unless ``bmr.rule_options`` says
otherwise). BMR-RHS (METHOD.md 4.6) fits
regularised-horseshoe hyper-parameters with Delta F as their likelihood and writes the
rescaled posterior back (:mod:`bmr_jax.methods.between`).

Sparse VD (Molchanov, Ashukha, Vetrov 2017; not in the paper's grid, the competitor on the
accuracy-compression frontier) is written from its paper: the log-uniform prior with the KL
approximation (:mod:`bmr_jax.bayes.priors.log_uniform`), the additive parameterisation (the
guide's ``loc`` and ``scale`` are theta and sigma), the local reparameterisation estimator
(:mod:`bmr_jax.bayes.local`), pruning at ``log alpha > 3`` before every block
(:mod:`bmr_jax.methods.between.sparse_vd`), log sigma^2 starting at -10 and the KL's weight
rising linearly from 0 to 1 between epochs 5 and 20. What differs from the paper's choices:
the optimiser is this library's (AdaBelief at a constant 1e-3 unless a config says otherwise;
the paper uses Adam with a linear decay), the weights start at the network's initialisation,
and biases are weights of the layer matrix with the same prior.

Gradual magnitude pruning (``gmp``; Zhu & Gupta 2017, the classic baseline, not in the paper's
grid) is Flat-MAP without dropout whose smallest weights are masked before every block along
the :class:`~bmr_jax.bmr.TargetSparsity` rule's cubic schedule (ranked over all prunable
layers together; ``bmr.rule_options`` sets the target; :mod:`bmr_jax.methods.between.magnitude`).

IVON + BMR (``ivon_bmr``; not in the paper's grid) is BMR-S&S whose diagonal posterior is
learned by IVON (Shen et al. 2024; :mod:`bmr_jax.inference.ivon_trainer`) instead of the
reparameterised ELBO: the gradient at a posterior draw, a Newton-like step with the running
Hessian, and the posterior precision ``N (h + delta)`` read by the same reduce step. Every rule
(``bmr.rule: target``) applies to it as to BMR-S&S. Its flat prior has the layer precisions
fixed at their prior mean (``c = 1``: ``W = Z / 10`` in hidden layers, ``W = Z`` in the last),
so that the prior is the ``N(0, 1)`` on ``Z`` that IVON's weight decay stands for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bmr_jax.bmr.decide import (
    RULES,
    Evidence,
    PolynomialSchedule,
    Rule,
    SpikeAndSlab,
    TargetSparsity,
)
from bmr_jax.bmr.rhs import RHSConfig
from bmr_jax.errors import ConfigError
from bmr_jax.methods.settings import BmrSettings
from bmr_jax.registry import Registry


@dataclass(frozen=True)
class Method:
    """A named inference method: which prior and guide, its reference settings, and what it
    does between blocks (a name in ``bmr_jax.methods.between.BETWEEN_BLOCKS``)."""

    name: str
    prior: str
    guide: str
    lr: float
    dropout: float = 0.0
    eval_samples: int = 100
    prior_options: dict = field(default_factory=dict)
    between: str = "nothing"
    rule: Rule | None = None  # the decision rule of a reduce step
    within: Rule | None = None  # group BMR: a weight-wise rule inside the kept units
    write_back: bool = False  # write the reduced posterior into the guide
    rhs: RHSConfig | None = None  # BMR-RHS: the hyper-parameter fit
    estimator: str = "reparam"  # the ELBO's gradient estimator (guide.estimator's default)
    init_scale: float | None = None  # the guide's starting sd (guide.init_scale's default)
    kl_warmup: tuple[float, float] | None = None  # epochs (train.kl_warmup's default)
    trainer: str = "svi"  # "svi" (the ELBO's gradient) or "ivon" (IVON's, at a posterior draw)
    multipliers: str | None = None  # a multiplier per unit: "normal" or "log_uniform" (SBP's)


# Sparse VD (Molchanov et al. 2017): log sigma^2 starts at -10, i.e. sigma = exp(-5)
SPARSE_VD_INIT_SCALE = math.exp(-5.0)

METHODS: Registry[Method] = Registry("method")
for _m in (
    Method("flat_map", "flat", "delta", lr=1e-3, dropout=0.2, eval_samples=1),
    Method("flat_ff", "flat", "mean_field", lr=5e-3),
    Method("tiered_ff", "horseshoe", "mean_field", lr=5e-3),
    Method("bmr_ss", "flat", "mean_field", lr=1e-2, between="spike_and_slab",
           rule=SpikeAndSlab()),
    Method("bmr_rhs", "flat", "mean_field", lr=1e-2, between="rhs", write_back=True,
           rhs=RHSConfig()),
    Method("bmr_units", "flat", "matrix_normal", lr=1e-2, between="units", rule=SpikeAndSlab()),
    Method("bmr_group", "flat", "mean_field", lr=1e-2, between="groups", rule=SpikeAndSlab()),
    Method("bmr_multipliers", "flat", "mean_field", lr=1e-2, between="multipliers",
           rule=SpikeAndSlab(), multipliers="normal"),
    Method("bmrs", "flat", "mean_field", lr=1e-3, between="multipliers", rule=Evidence(),
           multipliers="log_uniform"),
    Method("l1_filters", "flat", "delta", lr=1e-3, eval_samples=1, between="filters",
           rule=TargetSparsity(PolynomialSchedule(final=0.5, begin=2, end=10), scope="layer")),
    Method("sparse_vd", "log_uniform", "mean_field", lr=1e-3, between="sparse_vd",
           estimator="local", init_scale=SPARSE_VD_INIT_SCALE, kl_warmup=(5.0, 20.0)),
    Method("gmp", "flat", "delta", lr=1e-3, eval_samples=1, between="magnitude",
           rule=TargetSparsity(PolynomialSchedule(final=0.9, begin=2, end=10), scope="global")),
    Method("ivon_bmr", "flat", "mean_field", lr=0.1, between="spike_and_slab",
           prior_options={"fixed_precision": 1.0}, rule=SpikeAndSlab(), trainer="ivon"),
):  # fmt: skip
    METHODS.register(_m.name, _m)


def configured(name: str | Method, bmr: BmrSettings = BmrSettings(), prior: str | None = None,
               prior_options: Mapping | None = None) -> Method:  # fmt: skip
    """The method ``name`` with a config's options applied: ``prior`` replaces its prior (a
    registered name), ``prior_options`` are keyword arguments of the prior (added to the
    method's own for its own prior), ``bmr.rule`` and ``bmr.rule_options`` its decision rule,
    and ``bmr.inclusion_rate`` a spike-and-slab rule's counting. A rule for a method without a
    decision rule (Flat-FF, BMR-RHS) is refused, and so are options the prior does not have.
    ``bmr.within`` (a rule name, its default options) is group BMR's weight-wise rule."""
    method = METHODS.get(name) if isinstance(name, str) else name
    if prior is not None and prior != method.prior:
        method = replace(method, prior=prior, prior_options={})
    if prior_options:
        method = replace(method, prior_options={**method.prior_options, **prior_options})
        _check_prior(method)
    if bmr.rule is not None or bmr.rule_options:
        if method.rule is None:
            raise ConfigError(f"bmr.rule: method {method.name!r} has no decision rule")
        rule_class = RULES.get(bmr.rule) if bmr.rule is not None else type(method.rule)
        try:
            method = replace(method, rule=rule_class(**bmr.rule_options))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bmr.rule_options: {rule_class.name}: {e}") from None
    if bmr.within is not None:
        if method.between not in ("groups", "multipliers"):
            raise ConfigError(f"bmr.within: method {method.name!r} does not remove whole units "
                              "(bmr_group and bmr_multipliers do)")  # fmt: skip
        method = replace(method, within=RULES.get(bmr.within)())
    return replace(method, rule=_counting(method.rule, bmr.inclusion_rate),
                   within=_counting(method.within, bmr.inclusion_rate))


def _counting(rule: Rule | None, inclusion_rate: str) -> Rule | None:
    """A spike-and-slab ``rule`` with the inclusion rate counted over ``inclusion_rate``."""
    if isinstance(rule, SpikeAndSlab) and rule.rate_over != inclusion_rate:
        return replace(rule, rate_over=inclusion_rate)
    return rule


def _check_prior(method: Method) -> None:
    """ConfigError (one line) if ``method.prior_options`` are not the prior's attributes."""
    from bmr_jax.bayes import priors

    priors.create_prior(method.prior, **method.prior_options)  # ConfigError names the option
