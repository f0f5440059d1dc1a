"""The Laplace approximation's log evidence and the prior precision that maximises it.

Around trained weights ``theta`` with the GGN diagonal ``h`` (:mod:`.curvature`) and a
Gaussian prior ``N(0, 1 / delta)`` on every weight of a group, the Laplace log evidence is
(MacKay 1992; Immer et al. 2021, "Scalable marginal likelihood estimation for model selection
in deep learning", eq. 4, with a diagonal posterior precision ``h + delta``)::

    ln p(D) ~= ln p(D | theta) + sum_i [1/2 ln delta - 1/2 delta theta_i^2 - 1/2 ln(h_i + delta)]

(the ``2 pi`` of prior and posterior cancel). BMR's Delta F depends on ``delta`` through the
prior variance ``1 / delta`` it compares the spike against, so ``delta`` is chosen first, by
this evidence. Per group, ``delta * d/d delta`` of it is
``P/2 - delta |theta|^2 / 2 - 1/2 sum_i delta / (h_i + delta)``, which falls with ``delta``:
one root, found by bisection in ``ln delta``.
"""

from __future__ import annotations

import jax
import numpy as np

SCOPES = ("global", "leaf")


def _groups(params, ggn, scope: str):
    """``[(theta, h)]`` as float64 vectors: one group, or one per leaf."""
    thetas = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(params)]
    hs = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(ggn)]
    if scope == "global":
        return [(np.concatenate(thetas), np.concatenate(hs))]
    if scope == "leaf":
        return list(zip(thetas, hs, strict=True))
    raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")


def log_evidence_terms(theta: np.ndarray, h: np.ndarray, delta: float) -> float:
    """The ``delta``-dependent part of the Laplace log evidence of one group."""
    return float(0.5 * theta.size * np.log(delta) - 0.5 * delta * np.sum(theta**2)
                 - 0.5 * np.sum(np.log(h + delta)))  # fmt: skip


def per_leaf(prior_precision, params):
    """``prior_precision`` as a pytree like ``params``: a number repeated for every leaf, or
    the per-leaf pytree :func:`calibrate_prior_precision` returns, as it is."""
    if jax.tree.structure(prior_precision) == jax.tree.structure(0.0):
        return jax.tree.map(lambda _: prior_precision, params)
    return prior_precision


def log_marginal_likelihood(log_likelihood: float, params, ggn, prior_precision) -> float:
    """The Laplace log evidence, given ``ln p(D | theta)`` and ``prior_precision`` as from
    :func:`calibrate_prior_precision` (a number, or a pytree of numbers like ``params``)."""
    deltas = jax.tree.leaves(per_leaf(prior_precision, params))
    total = log_likelihood
    for (theta, h), delta in zip(_groups(params, ggn, "leaf"), deltas, strict=True):
        total += log_evidence_terms(theta, h, float(delta))
    return float(total)


def _best_delta(theta, h, low: float, high: float, iterations: int = 200) -> float:
    """The root of ``delta * d/d delta`` of the group's evidence, clamped to [low, high]."""

    def slope(log_delta):
        delta = np.exp(log_delta)
        return 0.5 * theta.size - 0.5 * delta * np.sum(theta**2) - 0.5 * np.sum(delta / (h + delta))

    a, b = np.log(low), np.log(high)
    if slope(a) <= 0:
        return low
    if slope(b) >= 0:
        return high
    for _ in range(iterations):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if slope(mid) > 0 else (a, mid)
    return float(np.exp(0.5 * (a + b)))


def calibrate_prior_precision(params, ggn, *, scope: str = "global",
                              bounds: tuple[float, float] = (1e-8, 1e8)):  # fmt: skip
    """The prior precision maximising the Laplace log evidence: one number (``global``) or a
    pytree like ``params`` with one per leaf (``leaf``: a kernel's and a bias's apart)."""
    groups = _groups(params, ggn, scope)
    best = [_best_delta(theta, h, *bounds) for theta, h in groups]
    if scope == "global":
        return best[0]
    return jax.tree.unflatten(jax.tree.structure(params), best)
