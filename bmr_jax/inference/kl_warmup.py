"""KL warm-up: the ELBO's KL term weighted from 0 to 1 over the first epochs.

Molchanov, Ashukha & Vetrov (2017, "Variational dropout sparsifies deep neural networks",
section 4.3) train Sparse VD with the KL term's weight rising linearly from 0 to 1 in the
first epochs; with the weight ``beta`` the objective per step is
``E_q log p(y | w) - beta * KL(q || p)`` (METHOD.md 4.5). :func:`kl_weight` is ``beta`` as a
function of the step; :class:`ScaleLatents` applies it to a NumPyro model and guide.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.primitives import Messenger


def kl_weight(position, num_batches: int, start: float, end: float) -> jax.Array:
    """The KL term's weight at step ``position``: 0 before epoch ``start``, linear to 1 at
    ``end``, then 1 (a step function at ``start`` when ``start == end``)."""
    epoch = position / num_batches
    ramp = (epoch - start) / max(end - start, 1e-12)
    return jnp.clip(ramp, 0.0, 1.0) if end > start else jnp.asarray(epoch >= start, jnp.float32)


class ScaleLatents(Messenger):
    """Multiplies the log-density scale of every latent sample site by ``factor`` (traced
    values allowed, 0 included), leaving observed sites alone: with it on model and guide the
    ELBO is ``E log p(y | w) - factor * KL``."""

    def __init__(self, fn, factor):
        self.factor = factor
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            scale = msg.get("scale")
            msg["scale"] = self.factor if scale is None else self.factor * scale


