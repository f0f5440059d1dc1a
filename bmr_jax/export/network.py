"""A pruned network as a smaller network: :func:`export_network` and the Bayesian predictive
of the result.

The input is an ordinary module holding the weights to export (a run's posterior medians),
the masks of its pruned entries and, optionally, the posterior standard deviations of its
weights. The output is the narrower module of :mod:`bmr_jax.export.architecture` with the
kept weights (pruned entries zero), and the standard deviations of the kept weights, from which
:func:`predictive_probs` samples the posterior predictive ``p(y | x) ~= (1/S) sum_s p(y | x,
W_s)`` (METHOD.md section 5) with ``W_s ~ N(loc, scale^2)`` independently per weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bmr_jax.bayes.layers import build_layer_view, from_matrix
from bmr_jax.bayes.shrink import shrink
from bmr_jax.bayes.units import unit_links
from bmr_jax.export import architecture as arch


@dataclass(frozen=True)
class LayerChange:
    """One layer of an export: its matrix shape before and after, and its non-zero entries."""

    name: str
    before: tuple[int, int]
    after: tuple[int, int]
    nonzero: int

    def line(self) -> str:
        return (f"{self.name}: {self.before[0]} -> {self.after[0]} units, {self.before[1]} -> "
                f"{self.after[1]} inputs (bias included), {self.nonzero:,} non-zero of "
                f"{self.after[0] * self.after[1]:,}")  # fmt: skip


@dataclass(frozen=True)
class Exported:
    """The exported network.

    Attributes:
      module: the narrower Flax NNX module, in eval mode, with the exported weights.
      architecture: its description (:mod:`bmr_jax.export.architecture`).
      layers: one :class:`LayerChange` per weight layer, in the order of the forward pass.
      units: ``{link label: (units before, units after)}``.
      scales: ``{Param path: standard deviation}`` of the kept weights (``None`` for a
        point export); parameters without an entry are point values.
    """

    module: nnx.Module
    architecture: dict
    layers: tuple[LayerChange, ...]
    units: dict
    scales: dict | None = None


def export_network(module: nnx.Module, input_shape, masks: Mapping[str, np.ndarray], *,
                   net: str, preset: str, num_classes: int, sequential: bool,
                   scales: Mapping[str, np.ndarray] | None = None) -> Exported:  # fmt: skip
    """The network ``module`` without the units that ``masks`` leave unused
    (:mod:`bmr_jax.bayes.shrink`); ``net`` and ``preset`` name it in the registry, from which
    :func:`bmr_jax.export.load` rebuilds it (any other network exports too, and loads with
    ``template=``).

    Args:
      masks: ``{layer: (rows, cols)}`` True = kept; missing layers are dense.
      sequential: the registry's ``NetSpec.sequential`` (how units are found).
      scales: ``{layer: (rows, cols)}`` posterior standard deviations; with them constants
        are not folded (a random bias does not fold) and the result keeps the kept entries'.
    """
    view = build_layer_view(module, input_shape)
    params = nnx.state(module, nnx.Param)
    matrices = {k: np.asarray(v) for k, v in jax.device_get(view.matrices(params)).items()}
    links = unit_links(module, view, sequential=sequential)
    result = shrink(view, links, matrices, masks, scales=scales, fold_constants=scales is None)
    shapes = {name: m.shape for name, m in result.matrices.items()}
    description = arch.describe(net, preset, num_classes, input_shape, view, shapes)
    layer_paths = {s.path for s in view.layers}
    others = {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(params)
              if path[:-1] not in layer_paths}  # fmt: skip
    small = arch.build_module(description, template=module)
    arch.set_parameters(small, input_shape, result.matrices, others)
    changes = tuple(
        LayerChange(s.name, s.shape, shapes[s.name], int(np.count_nonzero(result.matrices[s.name])))
        for s in view.layers
    )
    kept_scales = None if result.scales is None else _param_scales(small, input_shape,
                                                                   result.scales)  # fmt: skip
    return Exported(small, description, changes, result.units, kept_scales)


def _param_scales(module, input_shape, scales: Mapping[str, np.ndarray]) -> dict:
    """Layer-matrix standard deviations as ``{Param path: array}`` of kernels and biases."""
    out = {}
    for spec in build_layer_view(module, input_shape).layers:
        kernel, bias = from_matrix(spec, jnp.asarray(scales[spec.name]))
        out[spec.path + ("kernel",)] = np.asarray(kernel)
        if bias is not None:
            out[spec.path + ("bias",)] = np.asarray(bias)
    return out


def predictive_probs(module: nnx.Module, scales: Mapping[tuple, np.ndarray], images, *,
                     key: jax.Array, samples: int = 100, chunk_size: int = 1000) -> np.ndarray:
    """Posterior-predictive class probabilities ``(N, C)`` of ``images`` under independent
    Gaussians ``N(loc, scale^2)`` on the parameters in ``scales`` (``loc``: the module's
    value); the others stay at their values. The same ``samples`` draws serve every chunk."""
    graphdef, params = nnx.split(module, nnx.Param)
    flat = dict(nnx.to_flat_state(params))
    locs = {path: flat[path][...] for path in scales}
    sds = {path: jnp.asarray(s) for path, s in scales.items()}

    @jax.jit
    def probs(state, keys, x):
        def one(key):
            draws = dict(zip(locs, jax.random.split(key, len(locs)), strict=True))
            values = {p: locs[p] + sds[p] * jax.random.normal(draws[p], locs[p].shape)
                      for p in locs}  # fmt: skip
            sample = nnx.from_flat_state([(p, values.get(p, v[...])) for p, v in
                                          nnx.to_flat_state(state)])  # fmt: skip
            return jax.nn.softmax(nnx.merge(graphdef, sample)(x), axis=-1)

        def body(total, key):
            return total + one(key), None

        total, _ = jax.lax.scan(body, one(keys[0]), keys[1:])
        return total / keys.shape[0]

    keys = jax.random.split(key, samples)
    chunks = [probs(params, keys, jnp.asarray(images[i : i + chunk_size]))
              for i in range(0, len(images), chunk_size)]  # fmt: skip
    return np.concatenate(jax.device_get(chunks))
