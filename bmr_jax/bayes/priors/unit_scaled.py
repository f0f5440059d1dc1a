"""A prior with one multiplier per unit: the variable that structured BMR on unit multipliers
(``bmr_multipliers``) and BMRS reduce.

For every unit ``j`` (a hidden neuron, a conv channel, an attention head, a feed-forward unit;
:class:`bmr_jax.bayes.units.UnitGeometry`) a scalar ``theta_j`` multiplies the consumer columns
that read the unit, i.e. the unit's output as the next layer sees it (after the activation):

    theta_j ~ N(0, 1)                                   one per unit (site "{consumer}/theta")
    W_consumer[:, cols(j)] = scale * gamma * theta_j * Z[:, cols(j)]

everything else as the base prior (the flat prior of METHOD.md 2.1 by default). This is the
multiplicative-noise idea of Structured Bayesian Pruning (Neklyudov et al. 2017), with a Gaussian
instead of a log-uniform prior so that the unit's reduction is Gaussian BMR: the spike
``theta_j = 0`` removes the unit, and under a mean-field posterior ``N(m_j, 1/pi_j)`` its Delta F
is METHOD.md 4.1's spike limit on one scalar, ``1/2 [ln(pi_j) - pi_j m_j^2]`` -- a one-dimensional
Savage-Dickey ratio whose posterior saw the unit's whole contribution at once, where the group
sum over a unit's weights (:mod:`bmr_jax.bmr.groups`) adds up many weights' evidence that a
mean-field posterior takes as independent. ``W = (theta Z)`` with two standard normal factors
is a normal scale mixture (its marginal is sharper at 0 and heavier-tailed than a Gaussian).
The multipliers start at 1 so that the network starts from its own initialisation.

``theta_prior="log_uniform"`` is Structured Bayesian Pruning's own prior instead (Neklyudov et
al. 2017, section 4; the model BMRS reduces, Wright et al. 2024): ``log theta_j`` uniform on
``[LOG_THETA_LOW, LOG_THETA_HIGH] = [-20, 0]`` (site ``"{consumer}/log_theta"``; a mean-field
guide gives it a normal truncated to that interval, SBP's posterior, whose location is kept in
the interval by the guide: SBP clips it to ``[-20, 5]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bmr_jax.bayes import truncated  # noqa: F401  (the ELBO's closed-form KL of log theta)
from bmr_jax.bayes.layers import LayerView
from bmr_jax.bayes.priors.base import Prior
from bmr_jax.bayes.units import UnitGeometry

LOG_THETA_LOW, LOG_THETA_HIGH = -20.0, 0.0  # SBP's log-uniform support of theta
LOG_THETA_MARGIN = 0.01  # the start of log theta below the top (the guide's location lies inside)


def theta_site(geometry: UnitGeometry, theta_prior: str = "normal") -> str:
    """The site of a link's unit multipliers (one link per consumer layer): ``theta`` itself,
    or ``log theta`` under the log-uniform prior."""
    what = "theta" if theta_prior == "normal" else "log_theta"
    return f"{geometry.link.consumer}/{what}"


@dataclass(frozen=True)
class UnitScaledPrior(Prior):
    """``base``'s scales with every unit's consumer columns multiplied by its ``theta_j``.

    Attributes:
      base: the prior of everything else (its sites and initial values are kept).
      units: the units that get a multiplier (their consumers must differ).
      theta_scale: the prior standard deviation of every ``theta_j`` (1: the ``Z`` scale).
      theta_prior: ``normal`` (``N(0, theta_scale^2)``) or ``log_uniform`` (SBP's).
    """

    base: Prior
    units: tuple[UnitGeometry, ...]
    theta_scale: float = 1.0
    theta_prior: str = "normal"
    name: str = "unit_scaled"

    def __post_init__(self):
        consumers = [g.link.consumer for g in self.units]
        if len(set(consumers)) != len(consumers):
            raise ValueError("unit multipliers: two links read by one consumer layer")
        if self.theta_prior not in ("normal", "log_uniform"):
            raise ValueError(f"theta_prior must be normal or log_uniform, got "
                             f"{self.theta_prior!r}")  # fmt: skip

    def site(self, geometry: UnitGeometry) -> str:
        return theta_site(geometry, self.theta_prior)

    def scales(self, view: LayerView):
        out = dict(self.base.scales(view))
        for g in self.units:
            if self.theta_prior == "normal":
                prior = dist.Normal(0.0, self.theta_scale)
            else:
                prior = dist.Uniform(LOG_THETA_LOW, LOG_THETA_HIGH)
            value = numpyro.sample(self.site(g), prior.expand([g.units]).to_event(1))
            theta = value if self.theta_prior == "normal" else jnp.exp(value)
            out[g.link.consumer] = out[g.link.consumer] * column_multipliers(g, theta)
        return out

    def init_values(self, view: LayerView):
        values = dict(self.base.init_values(view))
        # theta = 1; a log-uniform multiplier's location just inside its interval's top
        start = 1.0 if self.theta_prior == "normal" else LOG_THETA_HIGH - LOG_THETA_MARGIN
        values.update({self.site(g): jnp.full(g.units, start) for g in self.units})
        return values

    def z_distribution(self, spec):
        return self.base.z_distribution(spec)

    def prior_variance(self, spec):
        return self.base.prior_variance(spec)


def column_multipliers(geometry: UnitGeometry, theta) -> jnp.ndarray:
    """``(1, cols)``: ``theta_j`` on every consumer column that reads unit ``j``, 1 on the bias
    (column ``p * rows + r`` reads row ``r``; a unit is ``unit_rows`` rows)."""
    per_row = jnp.repeat(theta, geometry.link.unit_rows)
    columns = jnp.tile(per_row, geometry.positions)
    if geometry.consumer_bias:
        columns = jnp.concatenate([columns, jnp.ones(1, columns.dtype)])
    return columns[None, :]
