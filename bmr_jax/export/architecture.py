"""The exported network's architecture: the registry network with narrower layers.

An architecture is a small JSON-able dict::

    {"net": "lenet5", "preset": "paper", "num_classes": 10, "input_shape": [32, 32, 1],
     "layers": {"convs.0": [4, 26], "convs.1": [9, 101], ...}}

``layers`` gives every weight layer's matrix shape ``(rows, cols)`` (METHOD.md section 2:
output units by fan-in plus the bias column). :func:`build_module` builds the registry network
and replaces each layer whose shape differs by a narrower one of the same kind: ``nnx.Linear``
and ``nnx.Conv`` keep their kernel size, strides and padding; an ``nnx.MultiHeadAttention``
keeps its head size and loses heads. The result is an ordinary Flax NNX module of the same
family, callable as the original.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flax import nnx

from bmr_jax import nets
from bmr_jax.bayes.layers import LayerView, build_layer_view
from bmr_jax.errors import ShapeMismatchError

ATTENTION_PARTS = ("query", "key", "value", "out")


def describe(net: str, preset: str, num_classes: int, input_shape, view: LayerView,
             shapes: Mapping[str, tuple[int, int]]) -> dict:  # fmt: skip
    """The architecture dict of network ``net`` with layer matrix shapes ``shapes``."""
    return {
        "net": net,
        "preset": preset,
        "num_classes": int(num_classes),
        "input_shape": [int(d) for d in input_shape],
        "layers": {s.name: [int(d) for d in shapes[s.name]] for s in view.layers},
    }


def build_module(architecture: Mapping, template: nnx.Module | None = None) -> nnx.Module:
    """The Flax NNX module an architecture describes (parameters not yet set): the registry
    network ``architecture["net"]``, or a copy of ``template`` (any network of Linear, Conv
    and attention layers), with the layers narrowed."""
    input_shape = tuple(architecture["input_shape"])
    if template is not None:
        module = nnx.clone(template)
    elif architecture.get("net") in nets.list_nets():
        module = nets.create_net(architecture["net"], architecture["num_classes"], input_shape,
                                 architecture["preset"], rngs=nnx.Rngs(0))  # fmt: skip
    else:
        raise ShapeMismatchError(f"architecture: {architecture.get('net')!r} is not a registered "
                                 "network; build it and pass it as the template")  # fmt: skip
    narrow(module, input_shape, architecture["layers"])
    module.eval()
    return module


def narrow(module: nnx.Module, input_shape, shapes: Mapping[str, tuple[int, int]]) -> nnx.Module:
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
    rngs = nnx.Rngs(0)
    if isinstance(layer, nnx.Conv):
        window = math.prod(layer.kernel_size)
        if fan_in % window:
            raise ShapeMismatchError(f"architecture: {spec.name}: {fan_in} inputs are not a "
                                     f"whole number of {layer.kernel_size} kernels")  # fmt: skip
        return nnx.Conv(fan_in // window, rows, layer.kernel_size, strides=layer.strides,
                        padding=layer.padding, use_bias=layer.use_bias, rngs=rngs)  # fmt: skip
    if isinstance(layer, nnx.Linear):
        return nnx.Linear(fan_in, rows, use_bias=layer.use_bias, rngs=rngs)
    raise ShapeMismatchError(f"architecture: {spec.name}: cannot narrow a "
                             f"{type(layer).__name__}")  # fmt: skip


def _attention(attention: nnx.MultiHeadAttention, wanted, spec):
    prefix = ".".join(map(str, spec.path[:-1]))
    heads = wanted[f"{prefix}.query"][0] // attention.head_dim
    return nnx.MultiHeadAttention(
        num_heads=heads, in_features=attention.in_features,
        qkv_features=heads * attention.head_dim, out_features=attention.out_features,
        use_bias=attention.use_bias, decode=False, deterministic=True, rngs=nnx.Rngs(0),
    )  # fmt: skip


def replace_module(modules: dict, path: tuple, new) -> None:
    """Puts ``new`` at ``path`` of the module whose ``dict(nnx.iter_modules(...))`` is
    ``modules`` (an attribute, or an item of an ``nnx.List``)."""
    parent, key = modules[path[:-1]], path[-1]
    if isinstance(parent, nnx.List):
        parent[int(key)] = new
    else:
        setattr(parent, key, new)


def set_parameters(module: nnx.Module, input_shape, matrices: Mapping[str, np.ndarray],
                   others: Mapping[tuple, np.ndarray]) -> nnx.Module:  # fmt: skip
    """Writes the layer ``matrices`` and the other parameters (``{Param path: value}``:
    LayerNorm, class token, position table) into ``module`` (in place; returned)."""
    view = build_layer_view(module, input_shape)
    params = view.write(nnx.state(module, nnx.Param), matrices)
    flat = []
    layer_paths = {s.path for s in view.layers}
    for path, variable in nnx.to_flat_state(params):
        if path[:-1] not in layer_paths:
            variable = nnx.Param(np.asarray(others[path]))
        flat.append((path, variable))
    nnx.update(module, nnx.from_flat_state(flat))
    return module
