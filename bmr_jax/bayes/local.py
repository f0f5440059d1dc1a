"""The local reparameterisation estimator: one noise draw per pre-activation, not per weight.

Kingma, Salimans and Welling (2015), "Variational dropout and the local reparameterization
trick", section 2.3; used for Sparse VD by Molchanov, Ashukha and Vetrov (2017), section 4.2.
Under a mean-field guide every Bayesian layer's matrix is ``W = s * gamma * Z`` with
``Z_ij ~ N(m_ij, sd_ij^2)`` independent (METHOD.md 2 and 3), so given the layer's input ``x``
each pre-activation ``b_j = sum_i x_i W_ji`` (a weight's bias column takes input 1) is Gaussian:

    E[b_j]   = sum_i x_i   * s gamma_ji m_ji            (the layer with weights M, on x)
    Var[b_j] = sum_i x_i^2 * (s gamma_ji sd_ji)^2       (the layer with weights V, on x^2)

and is drawn as ``b = E[b] + sqrt(Var[b]) * eps`` with ``eps ~ N(0, 1)`` per pre-activation and
per datum. Both moments are the layer's own operation (dense, convolution, attention projection)
applied to ``(x, M)`` and ``(x^2, V)``, so any ``nnx.Linear``, ``nnx.Conv`` or
``nnx.LinearGeneral`` works unchanged.

What is and is not the same as drawing the weights:

- Every pre-activation's distribution given its input is exactly the one weight sampling gives
  (mean and variance above; tested against Monte Carlo over weight draws).
- A dense layer applied once per datum (``LayerSpec.positions == 1``): its pre-activations are
  independent given the input under both, so the expected log-likelihood of each datum, and
  therefore the ELBO and its gradient, are unchanged (unbiased; tested against the closed form
  of a linear-Gaussian model). Data in a minibatch get independent noise instead of sharing one
  weight draw, which is where the lower gradient variance comes from.
- A layer applied at several positions of one datum (convolution pixels, transformer tokens)
  shares its weights between them: weight sampling correlates the positions' pre-activations,
  the local estimator does not. It then optimises a slightly different objective (as Kingma et
  al. and Molchanov et al. accept for convolutions); ``reparam`` remains the exact estimator.

``local_dense`` takes the middle road: the local estimator on the layers applied once per datum
(dense layers, where it is exact) and one weight draw per step, shared by the minibatch, on the
others (convolutions), where drawing the pre-activations costs a second convolution. Every
datum's likelihood then has the distribution weight sampling gives it, so the ELBO and its
gradient are those of ``reparam``.

The KL term is untouched: the model keeps its ``Z`` sample sites so the ELBO takes their KL from
the guide (analytically with ``train.kl: analytic``); the guide's weight draw is then unused and
compiled away.

Two options follow the Sparse VD paper's code (Molchanov, Ashukha and Vetrov 2017; read for
facts, its section 4 and its Lasagne layers) where this library's Sparse VD differs:

- ``clip="step"``: at every step the means of the weights with ``log alpha >= 3`` are set to 0
  (the code's ``train_clip``), while the layer's prior multipliers ``gamma`` are ignored, so a
  weight comes back as soon as its ``log alpha`` falls below 3. The noise of a clipped weight
  stays in a layer applied once per datum (a dense layer: its variance reads the unclipped
  mean) and goes in one applied at several positions (a convolution reads the clipped one),
  as in that code. ``clip="block"`` (ours) leaves pruning to the masks set between blocks,
  which remove mean and noise.
- ``variance="alpha"``: the variance is ``exp(log alpha) theta^2`` with ``log alpha`` clipped
  to ``[-8, 8]`` (the code's), so a weight's noise is bounded by ``e^8 theta^2`` and, at the
  clip, no longer moves with ``sigma``. ``variance="sigma"`` (ours) is ``sigma^2`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
from flax import nnx
from numpyro.distributions import constraints

from bmr_jax.bayes.layers import from_matrix
from bmr_jax.bayes.model import BayesianNetwork, z_site
from bmr_jax.bayes.priors.log_uniform import PRUNE_LOG_ALPHA, log_alpha

ESTIMATORS = ("reparam", "local", "local_dense")
CLIPS = ("block", "step")  # Sparse VD: prune between blocks (ours) or clip every step (its code)
VARIANCES = ("sigma", "alpha")  # the noise variance: sigma^2 (ours) or exp(clip(log alpha)) theta^2


@dataclass(frozen=True)
class GaussianPreactivation:
    """A weight layer called with Gaussian weights: ``layer`` holds their means, ``variance``
    is a copy holding their variances, ``key`` draws the pre-activations' noise."""

    layer: nnx.Module
    variance: nnx.Module
    key: jax.Array

    def __call__(self, x: jax.Array, **options) -> jax.Array:
        # options: what the caller passes its layers (Flax attention: ``out_sharding``)
        mean = self.layer(x, **options)
        var = self.variance(jnp.square(x), **options)
        noise = jax.random.normal(self.key, mean.shape, mean.dtype)
        # sqrt is not differentiable at 0 (a pruned unit's variance): floor at the tiniest normal
        return mean + jnp.sqrt(jnp.maximum(var, jnp.finfo(var.dtype).tiny)) * noise


def with_weights(layer: nnx.Module, kernel: jax.Array, bias: jax.Array | None) -> nnx.Module:
    """A copy of weight layer ``layer`` with its kernel (and bias) replaced."""
    copy = nnx.clone(layer)
    copy.kernel = nnx.Param(kernel)
    if bias is not None:
        copy.bias = nnx.Param(bias)
    return copy


def _child(module, key):
    return module[key] if isinstance(key, int) else getattr(module, key)


def _replace_child(module, path: tuple, value) -> None:
    parent = module
    for key in path[:-1]:
        parent = _child(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)


class LocalReparamModel:
    """The model of ``bnet`` with the local reparameterisation estimator, for a mean-field
    guide: ``model(x, y, gamma, num_data)`` like :meth:`BayesianNetwork.model`.

    It reads the guide's ``"{layer}/z/loc"`` and ``"{layer}/z/scale"`` as ``numpyro.param``
    sites (the ELBO substitutes the guide's values into both programs), samples the prior's
    scale latents as the plain model does, and draws each Bayesian layer's pre-activations
    instead of its weights (module docstring). It is used for training only; predictions
    sample weights (:mod:`bmr_jax.inference.evaluate`).
    """

    def __init__(self, bnet: BayesianNetwork, dense_only: bool = False, *, clip: str = "block",
                 variance: str = "sigma"):  # fmt: skip
        if clip not in CLIPS or variance not in VARIANCES:
            raise ValueError(f"clip must be one of {CLIPS} and variance one of {VARIANCES}, "
                             f"got {clip!r} and {variance!r}")  # fmt: skip
        self.bnet, self.clip, self.variance = bnet, clip, variance
        self.local = {spec.name for spec in bnet.view.bayesian_layers
                      if not dense_only or spec.positions == 1}  # fmt: skip

    def moments(self, gamma: Mapping[str, jax.Array]) -> tuple[dict, dict]:
        """``({layer: mean of W}, {layer: variance of W})``: ``s gamma m`` and
        ``(s gamma sd)^2`` (module docstring), with the Z sample sites kept for the KL; a
        layer not drawn locally gets its weight draw ``s gamma Z`` as the mean and no
        variance."""
        scales = self.bnet.prior.scales(self.bnet.view)
        means, variances = {}, {}
        for spec in self.bnet.view.bayesian_layers:
            site = z_site(spec.name)
            z = numpyro.sample(site, self.bnet.prior.z_distribution(spec))
            multiplier = scales[spec.name] * gamma[spec.name]
            if spec.name not in self.local:  # a weight draw (the guide's), as reparam
                means[spec.name] = multiplier * z
                continue
            loc = numpyro.param(f"{site}/loc", jnp.zeros(spec.shape))
            sd = numpyro.param(f"{site}/scale", jnp.ones(spec.shape),
                               constraint=constraints.softplus_positive)  # fmt: skip
            if self.clip == "step":  # the weights' own clipping replaces gamma's masks
                multiplier = scales[spec.name]
            mean, variance = self._clipped(spec, loc, sd)
            means[spec.name] = multiplier * mean
            variances[spec.name] = jnp.square(multiplier) * variance
        return means, variances

    def _clipped(self, spec, loc, sd) -> tuple[jax.Array, jax.Array]:
        """A layer's ``Z`` mean and variance under the ``clip`` and ``variance`` options
        (module docstring)."""
        if self.clip == "block" and self.variance == "sigma":
            return loc, jnp.square(sd)
        log_a = log_alpha(loc, sd)  # clipped to [-8, 8]
        kept = log_a < PRUNE_LOG_ALPHA if self.clip == "step" else jnp.ones(loc.shape, bool)
        noisy = kept | (spec.positions == 1)  # a dense layer keeps a clipped weight's noise
        variance = jnp.exp(log_a) * jnp.square(loc) if self.variance == "alpha" else jnp.square(sd)
        return jnp.where(kept, loc, 0.0), jnp.where(noisy, variance, 0.0)

    def __call__(self, x, y=None, gamma=None, num_data=None, train: bool = True):
        bnet = self.bnet
        gamma = bnet.full_gamma() if gamma is None else gamma
        means, variances = self.moments(gamma)
        module = bnet.module_with(bnet.params_with(means), train=train)
        modules = dict(nnx.iter_modules(module))
        for spec in bnet.view.bayesian_layers:
            if spec.name not in variances:
                continue
            layer = modules[spec.path]
            kernel, bias = from_matrix(spec, variances[spec.name])
            sampled = GaussianPreactivation(layer, with_weights(layer, kernel, bias),
                                            numpyro.prng_key())  # fmt: skip
            _replace_child(module, spec.path, sampled)
        outputs = module(x)
        bnet.likelihood(outputs, y, x.shape[0] if num_data is None else num_data)
        return outputs
