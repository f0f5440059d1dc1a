"""The parameters SVI optimises: every ``numpyro.param`` site of a model and guide, their initial
values and the bijections from the unconstrained space the optimiser works in (METHOD.md 4.5)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import lax
from numpyro import handlers
from numpyro.distributions import biject_to, constraints


def param_transforms(model, guide, *args) -> tuple[dict, dict]:
    """``(initial constrained values, bijections from unconstrained)`` of every
    ``numpyro.param`` site of ``guide`` and ``model`` (the guide's win on shared names). The
    traces run compiled (op by op they take seconds on a CPU); the constraints are read while
    tracing."""
    constraints_by_name = {}

    def initial_values(*args):
        with handlers.seed(rng_seed=0):
            guide_trace = handlers.trace(guide).get_trace(*args)
            guide_params = {k: s["value"] for k, s in guide_trace.items() if s["type"] == "param"}
            replayed = handlers.substitute(handlers.replay(model, guide_trace), data=guide_params)
            model_trace = handlers.trace(replayed).get_trace(*args)
        values = {}
        for site in [*model_trace.values(), *guide_trace.values()]:
            if site["type"] == "param":
                constraint = site["kwargs"].get("constraint", constraints.real)
                values[site["name"]], constraints_by_name[site["name"]] = site["value"], constraint
        return values

    static = tuple(i for i, a in enumerate(args) if isinstance(a, int))  # num_data
    values = jax.jit(initial_values, static_argnums=static)(*args)
    return values, {k: biject_to(c) for k, c in constraints_by_name.items()}


def strongly_typed(tree):
    """``tree`` with every weakly typed leaf (a guide value built from a Python float) made a
    strongly typed array of the same dtype. A step's outputs are strongly typed, so a weakly
    typed initial state would compile the step twice: once for the first step, once for the
    rest (14 s each for a LeNet-5 on this CPU)."""
    return jax.tree.map(lambda a: lax.convert_element_type(a, a.dtype), tree)


def as_gamma(gamma: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Pruning multipliers as strongly typed arrays of the default float type, so that masks
    built from Python scalars (weakly typed) do not trigger a recompilation."""
    dtype = jnp.result_type(float)
    return {k: jnp.asarray(v, dtype=dtype) for k, v in gamma.items()}
