"""Weight-wise pruning scores on one mean-field posterior, and pruning to a fraction by any of
them: the question of issue 37.3, whether the evidence ranks weights better than magnitude
when both read the same posterior.

Every score is "prune first where it is highest", as the decision rules read Delta F
(:mod:`bmr_jax.bmr.decide`). For ``Z ~ N(m, 1/pi)`` with weight ``W = s Z`` (``s`` the
layer's prior scale times its multiplier):

- ``delta_f``: the spike's Delta F, ``1/2 [ln(v pi) - pi m^2]`` (METHOD.md 4.1, Savage-Dickey
  with the full prior ``N(0, v)``). With one ``v`` for every weight its ranking does not
  depend on ``v``: it is ``ln pi - pi m^2`` up to a constant, so an improper prior (Sparse VD's
  log-uniform) can be scored with ``v = 1``;
- ``magnitude``: ``-|s m|``, the posterior mean's size in weight units (Zhu & Gupta 2017);
- ``snr``: ``-ln(pi m^2)``, Sparse VD's ``log alpha`` (Molchanov et al. 2017), scale-free;
- ``random``: uniform noise, the floor any score must beat.

Delta F and the signal-to-noise ratio differ only in ``ln pi``: at the same ``pi m^2``, Delta F
prunes the more precise weight first.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from bmr_jax.bmr.decide import PolynomialSchedule, TargetSparsity
from bmr_jax.bmr.delta_f import delta_f_spike

SCORES = ("delta_f", "magnitude", "snr", "random")


def weight_scores(name: str, posterior: Mapping[str, tuple], weight_scale: Mapping,
                  prior_var: Mapping, key: jax.Array) -> dict[str, jax.Array]:  # fmt: skip
    """``{layer: score}`` of score ``name`` (``SCORES``) for the posterior ``{layer: (mean,
    precision)}`` of ``Z``; ``weight_scale[layer]`` is ``s`` (``W = s Z``), ``prior_var`` the
    full prior variance of ``Z`` (Delta F only), ``key`` draws the random score."""
    out = {}
    for i, (layer, (mean, precision)) in enumerate(posterior.items()):
        if name == "delta_f":
            out[layer] = delta_f_spike(mean, precision, prior_var[layer])[0]
        elif name == "magnitude":
            out[layer] = -jnp.abs(weight_scale[layer] * mean)
        elif name == "snr":
            out[layer] = -jnp.log(precision * jnp.square(mean) + 1e-30)
        elif name == "random":
            out[layer] = jax.random.uniform(jax.random.fold_in(key, i), mean.shape)
        else:
            raise ValueError(f"unknown score {name!r}: one of {', '.join(SCORES)}")
    return out


def prune_to(scores: Mapping[str, jax.Array], masks: Mapping[str, jax.Array],
             prunable: Mapping[str, bool], fraction: float) -> dict[str, jax.Array]:  # fmt: skip
    """Masks with ``fraction`` of all prunable entries pruned, the highest scores first, over
    every prunable layer together; entries ``masks`` already prune stay pruned and count
    (the frontier's target rule, ``TargetSparsity(scope="global")``, at once)."""
    rule = TargetSparsity(PolynomialSchedule(final=fraction, begin=0, end=0), scope="global")
    new, _ = rule(dict(scores), dict(masks), dict(prunable), 1)
    return {layer: new[layer] & masks[layer] for layer in masks}
