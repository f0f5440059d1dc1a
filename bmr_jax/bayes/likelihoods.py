"""Observation models (METHOD.md section 2): categorical for classification, Gaussian for
regression, both with minibatch subsampling scaled to the full data size."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


@dataclass(frozen=True)
class CategoricalLikelihood:
    """``y_n ~ Categorical(logits = f(x_n; W))``; the batch's log-likelihood is scaled by
    ``num_data / batch_size`` through a subsampled ``numpyro.plate``."""

    name: str = "categorical"

    def __call__(self, outputs: jax.Array, y: jax.Array | None, num_data: int) -> None:
        with numpyro.plate("data", num_data, subsample_size=outputs.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=outputs), obs=y)

    def predictive_probs(self, outputs: jax.Array, latents=None) -> jax.Array:
        """Class probabilities for one posterior sample."""
        return jax.nn.softmax(outputs, axis=-1)


@dataclass(frozen=True)
class GaussianLikelihood:
    """Regression: ``y ~ Normal(f(x), sigma^2)`` with ``sigma^-2 ~ Gamma(2, 2)`` (a latent
    site named ``noise_precision``), or a known ``noise_precision``; the network's single
    output is the mean."""

    concentration: float = 2.0
    rate: float = 2.0
    noise_precision: float | None = None
    name: str = "gaussian"

    def __call__(self, outputs: jax.Array, y: jax.Array | None, num_data: int) -> None:
        if self.noise_precision is not None:
            precision = jnp.asarray(self.noise_precision)
        else:
            precision = numpyro.sample("noise_precision", dist.Gamma(self.concentration, self.rate))
        mean = outputs.reshape(outputs.shape[0])
        with numpyro.plate("data", num_data, subsample_size=outputs.shape[0]):
            numpyro.sample("y", dist.Normal(mean, jax.lax.rsqrt(precision)), obs=y)

    def init_values(self):
        if self.noise_precision is not None:
            return {}
        return {"noise_precision": jnp.asarray(self.concentration / self.rate)}
