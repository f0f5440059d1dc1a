"""The flat prior of Flat-MAP, Flat-FF and BMR (METHOD.md section 2.1).

c_l^-2 ~ Gamma(2, 2)                       one precision per layer
scale_l = c_l / 10  (hidden layers),  c_l  (last layer)
W_l = scale_l * gamma_l * Z_l,  Z_l ~ N(0, I)
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bmr_jax.bayes.layers import LayerView
from bmr_jax.bayes.priors.base import Prior


@dataclass(frozen=True)
class FlatPrior(Prior):
    """Independent Gaussians with one learned scale per layer.

    Attributes:
      concentration, rate: of the Gamma hyper-prior on the layer precision ``c^-2``.
      hidden_factor: hidden layers use ``scale = hidden_factor * c`` (the paper's 1/10).
      fixed_precision: if set, ``c^-2`` is this constant instead of a latent variable (a
        plain Gaussian prior with known scales; used by the exactness tests).
    """

    concentration: float = 2.0
    rate: float = 2.0
    hidden_factor: float = 0.1
    fixed_precision: float | None = None
    name: str = "flat"

    def scales(self, view: LayerView):
        out = {}
        for spec in view.bayesian_layers:
            if self.fixed_precision is not None:
                precision = jnp.asarray(self.fixed_precision)
            else:
                precision = numpyro.sample(
                    f"{spec.name}/precision", dist.Gamma(self.concentration, self.rate)
                )
            c = jnp.reciprocal(jnp.sqrt(precision))
            out[spec.name] = c if spec.is_last else self.hidden_factor * c
        return out

    def init_values(self, view: LayerView):
        # the prior mean of c^-2: hidden scales start at hidden_factor, the last layer at 1
        if self.fixed_precision is not None:
            return {}
        mean = self.concentration / self.rate
        return {f"{s.name}/precision": jnp.asarray(mean) for s in view.bayesian_layers}
