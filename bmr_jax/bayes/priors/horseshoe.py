"""The regularised horseshoe of Tiered-FF and BMR-RHS (METHOD.md section 2.2).

Half-Cauchy variables are built as ``sqrt(v / u)`` with ``u, v ~ Gamma(1/2, 1)``
(``v / u`` is BetaPrime(1/2, 1/2); Piironen & Vehtari 2017, Ghosh et al. 2019). For a non-last
layer ``l`` with output units ``i`` and inputs ``k``:

    c_l^-2 ~ Gamma(2, 6)                            slab precision
    tau_l  = tau0 * HalfCauchy(1)                   layer-wise global scale, tau0 = 1e-2
    tau_i  ~ HalfCauchy(1)                          neuron-wise scale, one per output unit
    lambda_ik ~ HalfCauchy(1)                       weight-wise scale (optional, off by default)
    t_ik = tau_l * tau_i * lambda_ik
    gamma_ik^2 = c_l^2 t_ik^2 / (c_l^2 + t_ik^2)    regularised horseshoe
    W_ik = gamma_ik * Z_ik

The last layer has a single HalfCauchy(1) scale for the whole matrix and no slab.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bmr_jax.bayes.layers import LayerView
from bmr_jax.bayes.priors.base import Prior

HALF = dist.Gamma(0.5, 1.0)


def half_cauchy(name: str, shape: tuple[int, ...] = ()):
    """``sqrt(v / u)``, ``u, v ~ Gamma(1/2, 1)``: a HalfCauchy(1) draw from two Gamma sites
    named ``name/u`` and ``name/v``."""
    u = numpyro.sample(f"{name}/u", HALF.expand(shape).to_event(len(shape)))
    v = numpyro.sample(f"{name}/v", HALF.expand(shape).to_event(len(shape)))
    return jnp.sqrt(v / u)


@dataclass(frozen=True)
class HorseshoePrior(Prior):
    """Regularised horseshoe with layer-wise, neuron-wise and optional weight-wise scales.

    Attributes:
      tau0: global scale multiplier.
      slab_concentration, slab_rate: Gamma hyper-prior of the slab precision ``c^-2``.
      weight_wise: add a HalfCauchy scale per weight (``lambda_ik``).
      init_scale: the value of ``t_ik`` the guide starts from (0.1, the flat prior's hidden
        scale, so both priors start from the same network).
    """

    tau0: float = 1e-2
    slab_concentration: float = 2.0
    slab_rate: float = 6.0
    weight_wise: bool = False
    init_scale: float = 0.1
    name: str = "horseshoe"

    def scales(self, view: LayerView):
        out = {}
        for spec in view.bayesian_layers:
            if spec.is_last:
                out[spec.name] = half_cauchy(f"{spec.name}/scale")
                continue
            slab_precision = numpyro.sample(
                f"{spec.name}/slab_precision",
                dist.Gamma(self.slab_concentration, self.slab_rate),
            )
            t = self.tau0 * half_cauchy(f"{spec.name}/global")
            t = t * half_cauchy(f"{spec.name}/neuron", (spec.rows,))[:, None]
            if self.weight_wise:
                t = t * half_cauchy(f"{spec.name}/weight", spec.shape)
            c2 = jnp.reciprocal(slab_precision)
            t2 = jnp.square(t)
            out[spec.name] = jnp.sqrt(c2 * t2 / (c2 + t2))
        return out

    def init_values(self, view: LayerView):
        values = {}
        one = jnp.asarray(1.0)
        # neuron-wise sqrt(v/u) = init_scale / tau0 so that t_ik = init_scale at the start
        ratio = self.init_scale / self.tau0
        for spec in view.bayesian_layers:
            if spec.is_last:
                values.update({f"{spec.name}/scale/u": one, f"{spec.name}/scale/v": one})
                continue
            values[f"{spec.name}/slab_precision"] = jnp.asarray(
                self.slab_concentration / self.slab_rate
            )
            values.update({f"{spec.name}/global/u": one, f"{spec.name}/global/v": one})
            rows = jnp.ones(spec.rows)
            values[f"{spec.name}/neuron/u"] = rows / ratio
            values[f"{spec.name}/neuron/v"] = rows * ratio
            if self.weight_wise:
                full = jnp.ones(spec.shape)
                values.update({f"{spec.name}/weight/u": full, f"{spec.name}/weight/v": full})
        return values
