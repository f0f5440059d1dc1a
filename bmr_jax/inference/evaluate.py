"""Posterior-predictive evaluation in memory-bounded chunks (METHOD.md section 5).

For test inputs ``x`` the predictive is ``p(y | x) ~= (1/S) sum_s p(y | x, W_s)`` with
``W_s`` drawn from the guide (S = 100 by default; 1 for MAP). The test set is processed in
chunks of ``chunk_size`` inputs and the S samples are drawn inside one compiled loop
(``lax.scan``) per chunk, so memory holds one chunk's activations and one probability
accumulator whatever S is.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from tqdm.auto import tqdm

from bmr_jax.bayes.guides import Guide, sample_latents
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.inference import metrics, parallel


def make_predictive(bnet: BayesianNetwork, guide: Guide, mesh=None, apply=None, *,
                    point: bool = False):  # fmt: skip
    """A jitted ``probs(params, gamma, keys, x, aux=None) -> (len(x), C)`` averaging over
    ``keys``; with a ``mesh`` the inputs are split over its devices. ``apply(net_params, x,
    aux)`` computes the network's outputs from a draw of its parameters (default:
    ``bnet.apply``, without ``aux``; see :func:`bmr_jax.inference.shrunk.shrunk_apply`, whose
    ``aux`` is the kept rows and columns). ``point``: the network at the posterior median
    (``guide.median``) instead of draws, the same for every key: the deterministic masked
    network the Sparse VD paper evaluates (Molchanov et al. 2017, section 5)."""

    def one_sample(params, gamma, key, x, aux):
        latents = guide.median(params) if point else sample_latents(guide, params, key)
        with handlers.substitute(data={**params, **latents}):
            net_params = bnet.network_params(gamma)
        outputs = (apply(net_params, x, aux) if apply is not None
                   else bnet.apply(net_params, x, train=False))  # fmt: skip
        return bnet.likelihood.predictive_probs(outputs)

    def probs(params, gamma, keys, x, aux=None):
        x = parallel.shard_batch(x, mesh)

        def body(total, key):
            return total + one_sample(params, gamma, key, x, aux), None

        first = one_sample(params, gamma, keys[0], x, aux)
        total, _ = jax.lax.scan(body, first, keys[1:])
        return total / keys.shape[0]

    # with several processes, gathered on every device, so that each one can read all of it
    gathered = mesh is not None and jax.process_count() > 1
    return jax.jit(probs, out_shardings=parallel.replicated(mesh) if gathered else None)


def predictive_probs(
    bnet: BayesianNetwork,
    guide: Guide,
    params: Mapping[str, jax.Array],
    images: np.ndarray,
    *,
    key: jax.Array,
    samples: int = 100,
    gamma: Mapping[str, jax.Array] | None = None,
    chunk_size: int = 1000,
    predictive=None,
    progress: bool = False,
    description: str = "evaluate",
) -> np.ndarray:
    """Posterior-predictive class probabilities ``(N, C)`` of ``images``.

    The same ``samples`` posterior draws are used for every chunk. Pass ``predictive`` (from
    :func:`make_predictive`) to reuse its compilation across calls; ``progress`` shows a bar
    over the images.
    """
    predictive = predictive or make_predictive(bnet, guide)
    gamma = bnet.full_gamma() if gamma is None else gamma
    keys = jax.random.split(key, samples)
    chunks = []
    with tqdm(total=len(images), disable=not progress, unit="image", desc=description,
              leave=False) as bar:  # fmt: skip
        for i in range(0, len(images), chunk_size):
            chunk = jnp.asarray(images[i : i + chunk_size])
            chunks.append(jax.block_until_ready(predictive(params, gamma, keys, chunk)))
            bar.update(len(chunk))
    return np.concatenate(jax.device_get(chunks))


CLASSIFICATION_METRICS = ("acc", "nll", "ece", "lpd")


def classification_metrics(probs, labels, bins: int = 20) -> dict[str, float]:
    """ACC, NLL, ECE (``bins`` equal-mass bins) and LPD of predictive ``probs``."""
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    return {
        "acc": float(metrics.accuracy(probs, labels)),
        "nll": float(metrics.nll(probs, labels)),
        "ece": float(metrics.ece(probs, labels, bins)),
        "lpd": float(metrics.lpd(probs, labels)),
    }
