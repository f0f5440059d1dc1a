"""Narrowing a network: the same module with fewer units in some layers.

:func:`narrow` replaces each layer whose matrix shape (METHOD.md section 2: output units by
fan-in plus the bias column) should change by a narrower one of the same kind: ``nnx.Linear``
and ``nnx.Conv`` keep their kernel size, strides and padding; an ``nnx.MultiHeadAttention``
keeps its head size and loses heads. The result is an ordinary Flax NNX module of the same
family, callable as before; its new layers' parameters are zeros, placeholders for the weights
that :func:`with_layers` writes in. (Flax's own initialisers would compile one random-number
program per new shape: 11.3 s of the 11.5 s it took to narrow the Fashion-MNIST MLP, measured
with ``cProfile`` before this change.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
from flax import nnx

from bmr_jax.bayes.layers import LayerView, build_layer_view
from bmr_jax.errors import ShapeMismatchError
from bmr_jax.nets.initializers import zeros

PLACEHOLDER = {"kernel_init": zeros, "bias_init": zeros}  # overwritten by with_layers


def narrow(module: nnx.Module, input_shape,
           shapes: Mapping[str, tuple[int, int]]) -> nnx.Module:  # fmt: skip
    """Replaces (in place) every layer of ``module`` whose matrix shape differs from
    ``shapes[name]`` by a narrower one of the same kind; returns ``module``."""
    view = build_layer_view(module, tuple(input_shape))
    modules = dict(nnx.iter_modules(module))
    wanted = {name: tuple(shape) for name, shape in shapes.items()}
    if set(wanted) != set(view.names()):
        raise ShapeMismatchError(f"architecture: layers {sorted(wanted)} are not those of the "
                                 f"network ({', '.join(view.names())})")  # fmt: skip
    done = set()
    for spec in view.layers:
        if wanted[spec.name] == spec.shape:
            continue
        parent_path = spec.path[:-1]
        if isinstance(modules.get(parent_path), nnx.MultiHeadAttention):
            if parent_path not in done:
                replace_module(modules, parent_path, _attention(modules[parent_path], wanted, spec))
                done.add(parent_path)
        else:
            narrower = _narrower(modules[spec.path], spec, wanted[spec.name])
            replace_module(modules, spec.path, narrower)
    return module


def _narrower(layer, spec, shape):
    rows, cols = shape
    fan_in = cols - spec.has_bias
    rngs = nnx.Rngs(0)  # unused by the placeholder initialisers, required by Flax
    if isinstance(layer, nnx.Conv):
        window = math.prod(layer.kernel_size)
        if fan_in % window:
            raise ShapeMismatchError(f"architecture: {spec.name}: {fan_in} inputs are not a "
                                     f"whole number of {layer.kernel_size} kernels")  # fmt: skip
        return nnx.Conv(fan_in // window, rows, layer.kernel_size, strides=layer.strides,
                        padding=layer.padding, use_bias=layer.use_bias, rngs=rngs,
                        **PLACEHOLDER)  # fmt: skip
    if isinstance(layer, nnx.Linear):
        return nnx.Linear(fan_in, rows, use_bias=layer.use_bias, rngs=rngs, **PLACEHOLDER)
    raise ShapeMismatchError(f"architecture: {spec.name}: cannot narrow a "
                             f"{type(layer).__name__}")  # fmt: skip


def _attention(attention: nnx.MultiHeadAttention, wanted, spec):
    prefix = ".".join(map(str, spec.path[:-1]))
    heads = wanted[f"{prefix}.query"][0] // attention.head_dim
    return nnx.MultiHeadAttention(
        num_heads=heads, in_features=attention.in_features,
        qkv_features=heads * attention.head_dim, out_features=attention.out_features,
        use_bias=attention.use_bias, decode=False, deterministic=True, rngs=nnx.Rngs(0),
        **PLACEHOLDER,
    )  # fmt: skip


def replace_module(modules: dict, path: tuple, new) -> None:
    """Puts ``new`` at ``path`` of the module whose ``dict(nnx.iter_modules(...))`` is
    ``modules`` (an attribute, or an item of an ``nnx.List``)."""
    parent, key = modules[path[:-1]], path[-1]
    if isinstance(parent, nnx.List):
        parent[int(key)] = new
    else:
        setattr(parent, key, new)


def _value(x):
    return x[...] if isinstance(x, nnx.Variable) else x


def with_layers(view: LayerView, params: nnx.State, matrices: Mapping[str, jax.Array],
                others: Mapping[tuple, jax.Array]) -> nnx.State:  # fmt: skip
    """``params`` (a narrowed network's ``nnx.Param`` state, ``view`` its layer view) with the
    layer ``matrices`` written in and every other parameter (LayerNorm, class token, position
    table) taken from ``others`` (``{Param path: value}``, e.g. the full network's flat
    state); pure and jit-able, plain arrays as leaves."""
    written = view.write(params, matrices)
    layers = {s.path for s in view.layers}
    return nnx.from_flat_state([(p, _value(v) if p[:-1] in layers else _value(others[p]))
                                for p, v in nnx.to_flat_state(written)])  # fmt: skip
