"""The parameters SVI optimises: every ``numpyro.param`` site of a model and guide, their initial
values and the bijections from the unconstrained space the optimiser works in (METHOD.md 4.5)."""

from __future__ import annotations

import jax
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


