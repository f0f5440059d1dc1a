"""The prior protocol: what a prior over a network's weights must provide.

Every prior in bmr-jax is non-centred (METHOD.md section 2): each Bayesian layer's matrix is
``W = scale * gamma * Z`` with ``Z ~ N(0, 1)`` elementwise, ``scale`` drawn from the prior's own
hyper-priors and ``gamma`` the pruning mask (1, or a tiny value once pruned). A prior therefore
only has to say how to sample ``scale`` for every layer; the model, the guides and BMR handle
``Z``. Adding a prior is one file: subclass :class:`Prior`, implement :meth:`Prior.scales` and
:meth:`Prior.init_values`, and register it with :func:`bmr_jax.bayes.priors.register_prior`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from bmr_jax.bayes.layers import LayerSpec, LayerView


class Prior(abc.ABC):
    """Base class of the weight priors.

    Site names: a prior's latent variables must be named ``f"{layer.name}/{what}"`` (or
    ``f"{what}"`` for network-wide ones) so that guides and summaries can group them by layer.
    """

    name: str = "prior"

    @abc.abstractmethod
    def scales(self, view: LayerView) -> dict[str, jax.Array]:
        """Samples the scale variables with ``numpyro.sample`` (positive latents only) and
        returns ``{layer name: scale}`` for every Bayesian layer, where ``scale`` broadcasts to
        the layer's ``(rows, cols)`` matrix: a scalar, a ``(rows, 1)`` column or a full matrix.
        """

    @abc.abstractmethod
    def init_values(self, view: LayerView) -> dict[str, jax.Array]:
        """Values of the latent scale variables the guides start from (constrained space)."""

    def z_distribution(self, spec: LayerSpec) -> dist.Distribution:
        """The prior of layer ``spec``'s ``Z`` matrix (site ``"{layer}/z"``, event shape
        ``(rows, cols)``): ``N(0, 1)`` elementwise for every non-centred prior. A prior that
        is not Gaussian in ``Z`` (Sparse VD's log-uniform) overrides it."""
        return dist.Normal(0.0, 1.0).expand(spec.shape).to_event(2)

    def prior_variance(self, spec: LayerSpec) -> jax.Array | float:
        """The full prior variance of every entry of ``Z`` for BMR (METHOD.md section 4.1's
        ``s``). 1 for every non-centred prior; override for a prior that is not."""
        return 1.0


def layer_scales_at(prior: Prior, view: LayerView, values: Mapping[str, jax.Array]):
    """The scales a prior gives when its latent variables take ``values`` (no randomness)."""
    from numpyro import handlers

    with handlers.seed(rng_seed=0), handlers.substitute(data=dict(values)):
        return {k: jnp.asarray(v) for k, v in prior.scales(view).items()}
