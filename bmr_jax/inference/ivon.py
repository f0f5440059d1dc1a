"""IVON: a diagonal Gaussian posterior at Adam-like cost, as an optax optimiser.

Improved Variational Online Newton (Shen et al. 2024, "Variational Learning is Effective for
Large Deep Networks", ICML, Algorithm 1). The posterior over the parameters is
``q = N(m, diag(sigma^2))`` with ``sigma^2 = 1 / (lambda (h + delta))``: ``m`` are the
parameters the optimiser updates, ``h`` a running Hessian estimate, ``lambda`` the effective
sample size (the training-set size) and ``delta`` the weight decay (a Gaussian prior of
precision ``lambda delta``). One step::

    theta = m + sigma u,  u ~ N(0, I)        (sample_parameters: the gradient is taken here)
    g_hat = grad(theta),  h_hat = g_hat u / sigma          (reparameterisation Hessian)
    g = b1 g + (1 - b1) g_hat
    h = b2 h + (1 - b2) h_hat + 1/2 (1 - b2)^2 (h - h_hat)^2 / (h + delta)
    m = m - lr (g / (1 - b1^t) + delta m) / (h + delta)

Two optional safeguards beyond Algorithm 1. ``hess_min``: Algorithm 1 keeps only
``h + delta > 0``; where the likelihood is flat the noisy estimate can drift below 0, the
posterior then is wider than the prior and the weight decay's pull ``lr delta / (h + delta)``
exceeds 2, so the mean oscillates with growing amplitude; ``hess_min = 0`` keeps every
posterior at most as wide as the prior. ``clip_radius``: each entry of the Newton step
``(g / (1 - b1^t) + delta m) / (h + delta)`` is clipped before it is scaled by the learning
rate (an option of the IVON authors' implementation): ``g / h`` is unbounded where ``h`` is
small.

The noise ``u`` is drawn from a key in the state, so :func:`sample_parameters` and ``update``
see the same draw without passing it around. The loss must be the mean loss per datum.

What BMR needs from it is the posterior (:func:`posterior`): mean ``m``, precision
``lambda (h + delta)`` and the prior variance ``1 / (lambda delta)``, from which
``bmr_jax.bmr.delta_f`` scores every weight -- so a model trained without NumPyro can be
pruned by Bayesian model reduction (``bmr_jax.bmr.pruning.bmr_masks``).

    opt = ivon(learning_rate=0.1, ess=60_000)
    state = opt.init(params)
    theta = sample_parameters(params, state)
    grads = jax.grad(loss)(theta, batch)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class IVONState(NamedTuple):
    count: jax.Array
    key: jax.Array
    momentum: Any  # like the params
    hessian: Any  # like the params
    ess: jax.Array  # lambda
    weight_decay: jax.Array  # delta


def _noise(state: IVONState, params):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(state.key, state.count), len(leaves))
    return treedef.unflatten(
        [
            jax.random.normal(k, jnp.shape(p), jnp.result_type(p))
            for k, p in zip(keys, leaves, strict=True)
        ]
    )


def _sigma(state: IVONState):
    return jax.tree.map(lambda h: jax.lax.rsqrt(state.ess * (h + state.weight_decay)),
                        state.hessian)  # fmt: skip


def find_ivon_state(state) -> IVONState:
    """The IVON state inside ``state`` (itself, or nested in wrappers such as
    ``bmr_jax.bmr.pruning.PruningState`` or ``optax.chain`` tuples)."""
    if isinstance(state, IVONState):
        return state
    children = state._asdict().values() if hasattr(state, "_asdict") else (
        state if isinstance(state, tuple | list) else ())  # fmt: skip
    for child in children:
        try:
            return find_ivon_state(child)
        except ValueError:
            pass
    raise ValueError("no IVON state found in the optimiser state")


def sample_parameters(params, state):
    """``theta = m + sigma u``: where the gradient of the step is taken. Accepts the IVON state
    or a wrapper's state holding it; entries a pruning wrapper masks stay exactly zero."""
    ivon_state = find_ivon_state(state)
    u = _noise(ivon_state, params)
    theta = jax.tree.map(lambda m, s, e: m + s * e, params, _sigma(ivon_state), u)
    masks = getattr(state, "masks", None)
    if masks is not None:
        theta = jax.tree.map(lambda t, k: jnp.where(k, t, jnp.zeros_like(t)), theta, masks)
    return theta


def posterior_scale(state):
    """``sigma = (lambda (h + delta))^-1/2`` of every parameter, from the IVON state or a
    wrapper's state holding it."""
    return _sigma(find_ivon_state(state))


class Posterior(NamedTuple):
    mean: Any
    precision: Any
    prior_var: jax.Array


def posterior(params, state) -> Posterior:
    """The diagonal Gaussian posterior: mean ``m``, precision ``lambda (h + delta)``, and the
    variance ``1 / (lambda delta)`` of the Gaussian prior that the weight decay stands for."""
    s = find_ivon_state(state)
    precision = jax.tree.map(lambda h: s.ess * (h + s.weight_decay), s.hessian)
    return Posterior(params, precision, 1.0 / (s.ess * s.weight_decay))


def _new_hessian(h, h_hat, b2, delta):
    """Algorithm 1's Hessian average: positive, the last term corrects the noisy estimate."""
    return b2 * h + (1 - b2) * h_hat + 0.5 * (1 - b2) ** 2 * (h - h_hat) ** 2 / (h + delta)


def _newton_step(g, h, m, delta, clip_radius):
    """``(g + delta m) / (h + delta)``, each entry clipped to ``clip_radius`` if set."""
    newton = (g + delta * m) / (h + delta)
    return newton if clip_radius is None else jnp.clip(newton, -clip_radius, clip_radius)


def ivon(
    learning_rate: float | optax.Schedule,
    ess: float,
    *,
    weight_decay: float = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99999,
    hess_init: float = 1.0,
    seed: int = 0,
    hess_min: float | None = None,
    clip_radius: float | None = None,
) -> optax.GradientTransformation:
    """The IVON optimiser (Shen et al. 2024, Algorithm 1; module docstring).

    Args:
      learning_rate: step size (IVON takes larger ones than Adam, e.g. 0.05-0.2), or a schedule.
      ess: effective sample size ``lambda``, normally the number of training examples.
      weight_decay: ``delta``; the prior precision is ``lambda delta``.
      b1: momentum of the gradient.
      b2: momentum of the Hessian estimate.
      hess_init: initial Hessian ``h0`` (sets the initial posterior spread).
      seed: seeds the weight noise.
      hess_min: if set, ``h >= hess_min`` (a safeguard of the module docstring).
      clip_radius: if set, each Newton-step entry is clipped to it (the other safeguard).
    """
    if ess <= 0 or weight_decay <= 0 or hess_init <= 0:
        raise ValueError("ess, weight_decay and hess_init must be > 0")

    def init(params):
        return IVONState(
            count=jnp.zeros((), jnp.int32),
            key=jax.random.key(seed),
            momentum=jax.tree.map(jnp.zeros_like, params),
            hessian=jax.tree.map(lambda p: jnp.full_like(p, hess_init), params),
            ess=jnp.asarray(ess, jnp.float32),
            weight_decay=jnp.asarray(weight_decay, jnp.float32),
        )

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("ivon needs params in update()")
        u = _noise(state, params)
        sigma = _sigma(state)
        delta = state.weight_decay
        h_hat = jax.tree.map(lambda g, e, s: g * e / s, grads, u, sigma)
        momentum = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.momentum, grads)

        hessian = jax.tree.map(lambda h, hh: _new_hessian(h, hh, b2, delta), state.hessian, h_hat)
        if hess_min is not None:
            hessian = jax.tree.map(lambda h: jnp.maximum(h, hess_min), hessian)
        count = state.count + 1
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        correction = 1 - b1 ** count.astype(jnp.float32)
        updates = jax.tree.map(
            lambda g, h, m: -lr * _newton_step(g / correction, h, m, delta, clip_radius),
            momentum, hessian, params,
        )  # fmt: skip
        return updates, state._replace(count=count, momentum=momentum, hessian=hessian)

    return optax.GradientTransformation(init, update)
