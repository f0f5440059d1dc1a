"""The exported network's architecture: the registry network with narrower layers.

An architecture is a small JSON-able dict::

    {"net": "lenet5", "preset": "paper", "num_classes": 10, "input_shape": [32, 32, 1],
     "layers": {"convs.0": [4, 26], "convs.1": [9, 101], ...}}

``layers`` gives every weight layer's matrix shape ``(rows, cols)`` (METHOD.md section 2:
output units by fan-in plus the bias column). :func:`build_module` builds the registry network
and narrows it to those shapes (:func:`bmr_jax.bayes.narrow.narrow`): an ordinary Flax NNX
module of the same family, callable as the original.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flax import nnx

from bmr_jax import nets
from bmr_jax.bayes.layers import LayerView, build_layer_view
from bmr_jax.bayes.narrow import narrow, with_layers
from bmr_jax.errors import ShapeMismatchError


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


def set_parameters(module: nnx.Module, input_shape, matrices: Mapping[str, np.ndarray],
                   others: Mapping[tuple, np.ndarray]) -> nnx.Module:  # fmt: skip
    """Writes the layer ``matrices`` and the other parameters (``{Param path: value}``:
    LayerNorm, class token, position table) into ``module`` (in place; returned)."""
    view = build_layer_view(module, input_shape)
    nnx.update(module, with_layers(view, nnx.state(module, nnx.Param), matrices, others))
    return module
