"""BMR of a log-uniform multiplier (BMRS; Wright, Igel, Selvan, NeurIPS 2024), written from the
model of Structured Bayesian Pruning (Neklyudov et al. 2017).

A unit's multiplier ``theta`` has the log-uniform prior ``log theta ~ U[a, b]`` and the
posterior ``log theta ~ N(mu, sigma^2)`` truncated to ``[a, b]`` (SBP). BMRS_U reduces the
prior to the log-uniform on a sub-interval ``[a', b']`` near zero (``theta`` below the
resolution ``2^-p``, down to ``2^-23``). On ``[a', b']`` the ratio of the priors is the
constant ``(b - a) / (b' - a')`` and 0 elsewhere, so (METHOD.md 4, ``Delta F = ln E_q[p~/p]``):

    Delta F = ln q(a' <= log theta <= b') - ln((b' - a') / (b - a))
            = ln[(Phi(beta') - Phi(alpha')) / (Phi(beta) - Phi(alpha))] - ln((b' - a') / (b - a))

with ``alpha = (a - mu) / sigma`` and the others alike. The unit is pruned when Delta F >= 0:
the posterior puts more mass on the tiny-theta interval than the prior does.
"""

from __future__ import annotations

import math

from bmr_jax.bayes.truncated import log_normal_mass

REDUCED_LOW = -23 * math.log(2.0)  # a' = ln 2^-23 (BMRS_U's lower end)


def bmrs_uniform_delta_f(mu, sigma, low, high, bits: float = 8.0):
    """BMRS_U's Delta F of every unit (module docstring) for ``log theta ~ N(mu, sigma^2)``
    truncated to ``[low, high]``; the reduced interval is ``[ln 2^-23, ln 2^-bits]``."""
    reduced_high = -bits * math.log(2.0)
    standard = lambda x: (x - mu) / sigma  # noqa: E731
    mass = log_normal_mass(standard(REDUCED_LOW), standard(reduced_high))
    total = log_normal_mass(standard(low), standard(high))
    return mass - total - math.log((reduced_high - REDUCED_LOW) / (high - low))
