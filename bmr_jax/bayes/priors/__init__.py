"""Weight priors behind one small protocol (:class:`Prior`), with a registry.

    from bmr_jax.bayes import priors
    prior = priors.create_prior("horseshoe", tau0=1e-2)

Shipped: ``flat`` (METHOD.md 2.1), ``horseshoe`` (regularised horseshoe, METHOD.md 2.2) and
``log_uniform`` (Sparse VD's, Molchanov et al. 2017).
"""

from bmr_jax.bayes.priors.base import Prior, layer_scales_at
from bmr_jax.bayes.priors.flat import FlatPrior
from bmr_jax.bayes.priors.horseshoe import HorseshoePrior, half_cauchy
from bmr_jax.bayes.priors.log_uniform import LogUniformPrior
from bmr_jax.errors import ConfigError
from bmr_jax.registry import Registry

PRIORS: Registry[type[Prior]] = Registry("prior")


def register_prior(name: str, *, overwrite: bool = False):
    """Class decorator: ``@register_prior("laplace")`` makes the prior nameable in configs."""

    def decorate(cls: type[Prior]) -> type[Prior]:
        PRIORS.register(name, cls, overwrite=overwrite)
        return cls

    return decorate


def create_prior(name: str, **options) -> Prior:
    """An instance of the prior registered as ``name`` with ``options`` as its attributes;
    :class:`bmr_jax.errors.ConfigError` (one line) for an option the prior does not have or a
    value it refuses."""
    cls = PRIORS.get(name)
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"prior_options: {name}: {e}") from None


register_prior("flat")(FlatPrior)
register_prior("horseshoe")(HorseshoePrior)
register_prior("log_uniform")(LogUniformPrior)

__all__ = [
    "PRIORS",
    "FlatPrior",
    "HorseshoePrior",
    "LogUniformPrior",
    "Prior",
    "create_prior",
    "half_cauchy",
    "layer_scales_at",
    "register_prior",
]
