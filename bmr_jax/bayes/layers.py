"""The layer view: every prunable tensor of a Flax NNX network as a named weight matrix.

METHOD.md section 2: each prunable layer ``l`` is a matrix ``W_l`` of shape
``(rows = output units, cols = fan-in [+ 1 bias column])``; conv kernels are reshaped to
``(out_channels, kh * kw * in_channels)``. This module finds those layers in any NNX network,
in the order the forward pass calls them (not the alphabetical order of the parameter tree),
and converts between the network's parameters and the matrices.

Treatment of every kind of parameter (the defaults; see :func:`build_layer_view`):

=====================================  ===========  ==========  ===========================
parameter                              Bayesian     prunable    matrix
=====================================  ===========  ==========  ===========================
``nnx.Linear`` kernel + bias           yes          yes         ``(out, in + 1)``
``nnx.Conv`` kernel + bias             yes          yes         ``(out, kh * kw * in + 1)``
attention query/key/value             yes          yes         ``(heads * head_dim, in + 1)``
  (``nnx.LinearGeneral``)
attention output projection            yes          yes         ``(out, heads * head_dim + 1)``
Mixer token / channel MLPs             yes          yes         (they are ``nnx.Linear``)
patch embedding (a conv)               yes          yes         ``(width, p * p * C + 1)``
LayerNorm scale and offset             no (point)   no          --
class token, position table            no (point)   no          --
=====================================  ===========  ==========  ===========================

"Point" parameters are fitted as point estimates (``numpyro.param``) without a prior by
default; ``BayesianNetwork.from_module(..., other_prior_scale=s)`` makes them latent with a
Gaussian ``N(1 or 0, s^2)`` prior instead (Bayesian, still not prunable).
``prunable`` / ``bayesian`` predicates over layer names change the defaults. The classifier
(the last layer called) is marked ``is_last``: its prior scale differs and decision rules
do not prune it (METHOD.md 4.4) unless the view is built with ``prune_classifier=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

WEIGHT_MODULES = (nnx.Linear, nnx.Conv, nnx.LinearGeneral)


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer seen as a matrix.

    Attributes:
      name: dotted module path, e.g. ``"blocks.0.attention.query"``.
      path: the module path as a tuple (keys of the NNX graph).
      kernel_shape, bias_shape: the module's parameter shapes (``bias_shape`` None: no bias).
      rows: output units; ``fan_in``: inputs per unit without the bias.
      is_last: this is the classifier (the last layer of the forward pass).
      positions: how often the matrix is applied per input (output pixels of a convolution,
        tokens of a transformer layer; 1 for a dense layer on a flat input), so that one
        input costs ``2 * rows * cols * positions`` FLOPs in this layer.
      bayesian: the layer gets a prior and a posterior (else a point estimate).
      prunable: decision rules may prune it (the last layer only under ``prune_classifier``).
    """

    name: str
    path: tuple
    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...] | None
    rows: int
    fan_in: int
    is_last: bool
    positions: int = 1
    bayesian: bool = True
    prunable: bool = True

    @property
    def has_bias(self) -> bool:
        return self.bias_shape is not None

    @property
    def cols(self) -> int:
        """Columns of the matrix: fan-in plus one for the bias."""
        return self.fan_in + self.has_bias

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def size(self) -> int:
        return self.rows * self.cols


def to_matrix(spec: LayerSpec, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """``(rows, fan_in [+1])`` matrix of a layer from its kernel (inputs first, outputs last,
    as every Flax layer stores it) and bias; numpy in, numpy out."""
    xp = np if isinstance(kernel, np.ndarray) else jnp
    matrix = kernel.reshape(spec.fan_in, spec.rows).T
    if spec.has_bias:
        matrix = xp.concatenate([matrix, bias.reshape(spec.rows, 1)], axis=1)
    return matrix


def from_matrix(spec: LayerSpec, matrix: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """Inverse of :func:`to_matrix`: ``(kernel, bias)`` in the module's own shapes."""
    kernel = matrix[:, : spec.fan_in].T.reshape(spec.kernel_shape)
    bias = matrix[:, spec.fan_in].reshape(spec.bias_shape) if spec.has_bias else None
    return kernel, bias


def _rows(module) -> int:
    if isinstance(module, nnx.LinearGeneral):
        return math.prod(module.out_features)
    return module.out_features


def _call_order(model: nnx.Module, input_shape: tuple[int, ...]) -> tuple[list[tuple], dict]:
    """Paths of the weight modules in the order a forward pass calls them, and how many
    outputs per unit each computes for one input (its positions; shape-only trace)."""
    graphdef, state = nnx.split(model)
    order: list[tuple] = []
    positions: dict = {}
    originals = {cls: cls.__call__ for cls in WEIGHT_MODULES}

    def forward(state, x):
        copy = nnx.merge(graphdef, state, copy=True)
        copy.eval()
        paths = {id(m): p for p, m in nnx.iter_modules(copy)}

        def recording(cls):
            def call(self, *args, **kwargs):
                path = paths.get(id(self))
                y = originals[cls](self, *args, **kwargs)
                if path is not None and path not in order:
                    order.append(path)
                    positions[path] = y.size // _rows(self)
                return y

            return call

        for cls in WEIGHT_MODULES:
            cls.__call__ = recording(cls)
        try:
            return copy(x)
        finally:
            for cls, call in originals.items():
                cls.__call__ = call

    jax.eval_shape(forward, state, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    return order, positions


@dataclass(frozen=True)
class LayerView:
    """The weight layers of a network in computation order, and the way back to its params.

    Attributes:
      layers: every weight layer (Bayesian or not), in the order the forward pass calls them.
    """

    layers: tuple[LayerSpec, ...]

    @property
    def bayesian_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(s for s in self.layers if s.bayesian)

    @property
    def last(self) -> LayerSpec:
        return self.layers[-1]

    def names(self) -> list[str]:
        return [s.name for s in self.layers]

    def matrices(self, params: nnx.State) -> dict[str, jax.Array]:
        """``{name: (rows, cols) matrix}`` of every layer, read from an ``nnx.Param`` state."""
        out = {}
        for spec in self.layers:
            module = _at(params, spec.path)
            bias = module["bias"][...] if spec.has_bias else None
            out[spec.name] = to_matrix(spec, module["kernel"][...], bias)
        return out

    def write(self, params: nnx.State, matrices: Mapping[str, jax.Array]) -> nnx.State:
        """A copy of ``params`` with the layers in ``matrices`` replaced (pure; jit-able)."""
        params = jax.tree.map(lambda v: v, params)  # new containers, same leaves
        for spec in self.layers:
            if spec.name not in matrices:
                continue
            kernel, bias = from_matrix(spec, matrices[spec.name])
            module = _at(params, spec.path)
            module["kernel"] = nnx.Param(kernel) if _is_var(module["kernel"]) else kernel
            if spec.has_bias:
                module["bias"] = nnx.Param(bias) if _is_var(module["bias"]) else bias
        return params


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def _at(state, path):
    for key in path:
        state = state[key]
    return state


def build_layer_view(
    model: nnx.Module,
    input_shape: tuple[int, ...],
    *,
    bayesian: Callable[[str], bool] | None = None,
    prunable: Callable[[str], bool] | None = None,
    prune_classifier: bool = False,
) -> LayerView:
    """Finds the weight layers of ``model`` for inputs of shape ``input_shape`` (no batch).

    Args:
      bayesian: predicate on a layer name; default: every weight layer is Bayesian.
      prunable: predicate on a layer name; default: every Bayesian layer but the last.
      prune_classifier: the last layer may be pruned too (if Bayesian and ``prunable``).
    """
    modules = dict(nnx.iter_modules(model))
    order, positions = _call_order(model, tuple(input_shape))
    unused = [p for p, m in modules.items() if isinstance(m, WEIGHT_MODULES) and p not in order]
    if unused:
        names = ", ".join(".".join(map(str, p)) for p in unused)
        raise ValueError(f"weight modules never called by the forward pass: {names}")
    specs = []
    for i, path in enumerate(order):
        module = modules[path]
        name = ".".join(map(str, path))
        kernel = module.kernel[...]
        bias = module.bias[...] if getattr(module, "bias", None) is not None else None
        rows = _rows(module)
        is_last = i == len(order) - 1
        is_bayes = bayesian(name) if bayesian else True
        specs.append(
            LayerSpec(
                name=name,
                path=path,
                kernel_shape=tuple(kernel.shape),
                bias_shape=None if bias is None else tuple(bias.shape),
                rows=rows,
                fan_in=kernel.size // rows,
                is_last=is_last,
                positions=positions[path],
                bayesian=is_bayes,
                prunable=is_bayes and (prune_classifier or not is_last)
                and (prunable(name) if prunable else True),
            )
        )
    return LayerView(tuple(specs))
