"""Approximate posteriors (METHOD.md section 3) over the latent sites of a Bayesian network.

- :class:`DeltaGuide` (MAP): a point mass at a learned value for every latent.
- :class:`MeanFieldGuide`: ``Normal(loc, scale)`` on every real latent (the ``Z`` matrices) and
  ``LogNormal(loc, scale)`` on every positive latent (prior scales and precisions).
- :class:`RowMVNGuide`: like mean-field, but each row of each ``Z`` matrix (one output unit's
  fan-in) is a full-covariance multivariate Normal.
- :class:`MatrixNormalGuide`: each ``Z`` matrix is matrix-normal,
  ``vec(Z) ~ N(vec(M), V (x) diag(u))``: rows independent, row ``i`` with covariance ``u_i V``.

Initialisation: every guide starts its locations at the values it is given, and its standard
deviations at ``init_scale`` (in ``Z`` units; on the log scale for positive latents). Two
starts are named (``guide.init`` in a config):

- ``network`` (ours): :meth:`BayesianNetwork.init_latents`, the network's own initial weights
  divided by the prior's initial scale and the prior's scale latents at their prior means,
  with ``init_scale = 1e-2``. With hidden scales of 0.1 the weights are perturbed by about
  1e-3 against initial magnitudes of 3e-2 to 3e-1, so the first steps see the deterministic
  network and train as reliably as it does.
- ``paper`` (the reference code, METHOD.md 4.7; :func:`uniform_start`): every latent's
  location uniform in ``[-2, 2]`` in unconstrained space (``Z`` means, biases included, and
  the log of every positive latent such as ``c^-2``), ``init_scale = 0.1``. It saturates
  tanh networks, and the first reduces prune little because the likelihood's gradients keep
  the posteriors narrower than the prior.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints

from bmr_jax.bayes.matrix_normal import MatrixNormal
from bmr_jax.bayes.truncated import truncated_normal_median
from bmr_jax.nets.initializers import uniform
from bmr_jax.registry import Registry


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site of the model: its shape, whether it is positive, and the bounds
    of a latent that lives on an interval (``None`` for the others)."""

    name: str
    shape: tuple[int, ...]
    positive: bool
    interval: tuple[float, float] | None = None


def latent_sites(model, *args, init_values: Mapping[str, jax.Array], **kwargs):
    """The latent sites of ``model(*args, **kwargs)`` in trace order, read from one abstract
    trace (``jax.eval_shape``: nothing is computed)."""
    found = {}

    def run():
        with handlers.seed(rng_seed=0), handlers.substitute(data=dict(init_values)):
            trace = handlers.trace(model).get_trace(*args, **kwargs)
        for name, site in _latents(trace).items():
            found[name] = (tuple(site["value"].shape), _base_support(site["fn"].support))
        return 0

    jax.eval_shape(run)
    sites = {}
    for name, (shape, support) in found.items():
        if isinstance(support, constraints.interval):
            bounds = (float(support.lower_bound), float(support.upper_bound))
            sites[name] = LatentSite(name, shape, False, bounds)
            continue
        if support not in (constraints.real, constraints.positive, constraints.softplus_positive):
            raise ValueError(f"latent site {name!r} has unsupported support {support}")
        sites[name] = LatentSite(name, shape, support is not constraints.real)
    return sites


def uniform_start(sites: Mapping[str, LatentSite], key: jax.Array, radius: float = 2.0):
    """The reference code's start (METHOD.md 4.7): every latent uniform in ``[-radius,
    radius]`` in unconstrained space, i.e. ``U`` for real latents and ``exp(U)`` for positive
    ones (so a log-normal guide's location is ``U``), one independent draw per site."""
    values = {}
    for i, (name, site) in enumerate(sites.items()):
        if site.interval is not None:
            raise ValueError(f"latent site {name!r} lives on an interval: the uniform start "
                             "has no unconstrained space for it")  # fmt: skip
        u = uniform(jax.random.fold_in(key, i), site.shape, -radius, radius)
        values[name] = jnp.exp(u) if site.positive else u
    return values


def _base_support(support):
    while hasattr(support, "base_constraint"):  # independent(...) of an expanded distribution
        support = support.base_constraint
    return support


def _latents(trace):
    return {k: v for k, v in trace.items() if v["type"] == "sample" and not v["is_observed"]}


class Guide:
    """Base class: one ``numpyro`` site per latent; subclasses say which distribution."""

    name = "guide"

    def __init__(
        self,
        sites: Mapping[str, LatentSite],
        init_values: Mapping[str, jax.Array],
        init_scale: float = 1e-2,
    ):
        self.sites = dict(sites)
        self.init_values = {k: jnp.asarray(init_values[k]) for k in self.sites}
        self.init_scale = init_scale

    def __call__(self, *args, **kwargs):
        for site in self.sites.values():
            numpyro.sample(site.name, self.distribution(site))

    def distribution(self, site: LatentSite) -> dist.Distribution:
        raise NotImplementedError

    def median(self, params: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """The posterior median of every latent (the location for real latents, ``exp(loc)``
        for log-normal positive ones, the truncated normal's median on an interval): a point
        summary for figures and exports."""
        out = {}
        for name, site in self.sites.items():
            loc = params[f"{name}/loc"]
            if site.interval is not None:
                out[name] = truncated_normal_median(loc, params[f"{name}/scale"], *site.interval)
            else:
                out[name] = jnp.exp(loc) if site.positive else loc
        return out

    def layers(self) -> list[str]:
        """The layers whose ``Z`` matrix (site ``"{layer}/z"``) this guide holds, in order."""
        return [name.removesuffix("/z") for name, site in self.sites.items() if _is_matrix(site)]

    def posterior(self, params: Mapping[str, jax.Array]) -> dict:
        """Every layer's posterior over ``Z`` read from the guide's (constrained) parameters,
        in the form this family's BMR reads (see the subclasses); jit-able."""
        raise NotImplementedError(f"the {self.name} guide has no posterior read-out for BMR")

    def posterior_params(self, posterior: Mapping[str, tuple]) -> dict[str, jax.Array]:
        """The inverse of :meth:`posterior`: guide parameters (constrained) that hold
        ``posterior`` (how a reduced posterior is written back)."""
        raise NotImplementedError(f"the {self.name} guide cannot take a posterior back")

    def _loc(self, site: LatentSite, value=None):
        init = self.init_values[site.name] if value is None else value
        init = jnp.broadcast_to(init, site.shape)
        if site.interval is not None:  # the truncated normal's location stays in the interval
            interval = constraints.interval(*site.interval)
            return numpyro.param(f"{site.name}/loc", init, constraint=interval)
        return numpyro.param(f"{site.name}/loc", jnp.log(init) if site.positive else init)

    def _scale(self, site: LatentSite, shape=None):
        init = jnp.full(site.shape if shape is None else shape, self.init_scale)
        return numpyro.param(f"{site.name}/scale", init, constraint=constraints.softplus_positive)

    def _diagonal(self, site: LatentSite) -> dist.Distribution:
        """Normal / LogNormal with independent entries (a Normal truncated to the interval
        for a latent on one). Their arguments are valid by construction (a
        softplus-constrained scale), so numpyro's check of concrete arguments is skipped: it
        ran eagerly at the start, an XLA program per layer shape."""
        if site.interval is not None:
            low, high = site.interval
            base = dist.TruncatedNormal(self._loc(site), self._scale(site), low=low, high=high,
                                        validate_args=False)  # fmt: skip
            return base.to_event(len(site.shape))
        base = (dist.LogNormal if site.positive else dist.Normal)(
            self._loc(site), self._scale(site), validate_args=False
        )
        return base.to_event(len(site.shape))


class DeltaGuide(Guide):
    """MAP: a learned point for every latent (positive ones kept positive)."""

    name = "delta"

    def distribution(self, site):
        init = jnp.broadcast_to(self.init_values[site.name], site.shape)
        constraint = constraints.positive if site.positive else constraints.real
        if site.interval is not None:
            constraint = constraints.interval(*site.interval)
        value = numpyro.param(f"{site.name}/loc", init, constraint=constraint)
        return dist.Delta(value, event_dim=len(site.shape))

    def median(self, params):
        return {name: params[f"{name}/loc"] for name in self.sites}  # the point itself


class MeanFieldGuide(Guide):
    """Fully factorised: Normal on real latents, LogNormal on positive ones."""

    name = "mean_field"

    def distribution(self, site):
        return self._diagonal(site)

    def posterior(self, params):
        """``{layer: (mean, precision)}`` of ``Z``: ``loc`` and ``scale^-2``."""
        return {layer: (params[f"{layer}/z/loc"], 1.0 / jnp.square(params[f"{layer}/z/scale"]))
                for layer in self.layers()}  # fmt: skip

    def posterior_params(self, posterior):
        """``{layer: (mean, precision)}`` -> ``{"{layer}/z/loc": mean, ".../scale":
        precision^-1/2}``."""
        values = {}
        for layer, (mean, precision) in posterior.items():
            values[f"{layer}/z/loc"] = mean
            values[f"{layer}/z/scale"] = jax.lax.rsqrt(precision)
        return values


def _is_matrix(site: LatentSite) -> bool:
    return site.name.endswith("/z") and len(site.shape) == 2 and not site.positive


class RowMVNGuide(Guide):
    """Each row of every ``Z`` matrix: ``MultivariateNormal(loc_i, L_i L_i')`` (full covariance
    within one output unit's fan-in); other latents as in the mean-field guide."""

    name = "row_mvn"

    def distribution(self, site):
        if not _is_matrix(site):
            return self._diagonal(site)
        rows, cols = site.shape
        tril = numpyro.param(
            f"{site.name}/scale_tril",
            jnp.broadcast_to(self.init_scale * jnp.eye(cols), (rows, cols, cols)),
            constraint=constraints.lower_cholesky,
        )
        return dist.MultivariateNormal(self._loc(site), scale_tril=tril).to_event(1)


class MatrixNormalGuide(Guide):
    """Every ``Z`` matrix matrix-normal (:class:`MatrixNormal`), enabling neuron-level BMR
    (METHOD.md 4.3); other latents as in the mean-field guide."""

    name = "matrix_normal"

    def distribution(self, site):
        if not _is_matrix(site):
            return self._diagonal(site)
        rows, cols = site.shape
        row_scale = numpyro.param(
            f"{site.name}/row_scale",
            jnp.full((rows,), self.init_scale),
            constraint=constraints.positive,
        )
        tril = numpyro.param(
            f"{site.name}/col_scale_tril", jnp.eye(cols), constraint=constraints.lower_cholesky
        )
        return MatrixNormal(self._loc(site), row_scale, tril)

    def posterior(self, params):
        """``{layer: (M, u, V)}``: row ``i`` of ``Z`` is ``N(M_i, u_i V)`` with
        ``u = row_scale^2`` and ``V = L L'`` (:class:`MatrixNormal`)."""
        out = {}
        for layer in self.layers():
            tril = params[f"{layer}/z/col_scale_tril"]
            out[layer] = (params[f"{layer}/z/loc"], jnp.square(params[f"{layer}/z/row_scale"]),
                          tril @ tril.T)  # fmt: skip
        return out


GUIDES: Registry[type[Guide]] = Registry("guide")
for _cls in (DeltaGuide, MeanFieldGuide, RowMVNGuide, MatrixNormalGuide):
    GUIDES.register(_cls.name, _cls)


def sample_latents(guide, params: Mapping[str, jax.Array], key: jax.Array, *args, **kwargs):
    """One draw of every latent from ``guide`` with parameters ``params`` (constrained)."""
    with handlers.seed(rng_seed=key), handlers.substitute(data=dict(params)):
        trace = handlers.trace(guide).get_trace(*args, **kwargs)
    return {k: v["value"] for k, v in _latents(trace).items()}
