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

import warnings
from collections.abc import Callable, Mapping
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


def export_network(module: nnx.Module, input_shape, masks, *, net: str, preset: str,
                   num_classes: int, sequential: bool,
                   scales: Mapping[str, np.ndarray] | None = None,
                   activation: Callable | None = None) -> Exported:  # fmt: skip
    """The network ``module`` without the units that ``masks`` leave unused
    (:mod:`bmr_jax.bayes.shrink`); ``net`` and ``preset`` name it in the registry, from which
    :func:`bmr_jax.export.load` rebuilds it (any other network exports too, and loads with
    ``template=``).

    Args:
      masks: True = kept, either ``{layer: (rows, cols)}`` for the layers of the module's
        layer view (missing layers are dense), or a pytree shaped like the module's
        ``nnx.Param`` state with a mask per kernel and bias (what
        :mod:`bmr_jax.bmr.pruning` keeps in the optimiser state, ``state.masks``).
      sequential: the weight layers read each other in sequence (the registry's
        ``NetSpec.sequential``; an MLP or a LeNet of the user's: ``True``).
      scales: ``{layer: (rows, cols)}`` posterior standard deviations; with them constants
        are not folded (a random bias does not fold) and the result keeps the kept entries'.
      activation: the non-linearity between the layers of a sequential network, mapping 0
        to 0 (:func:`bmr_jax.bayes.units.unit_links`); default: the module's ``activation``
        attribute, or the functions between the layers of an ``nnx.Sequential``.

    Warns (``UserWarning``) when the masks leave units unused that cannot be removed,
    because nothing says how the layer's output reaches the next one.
    """
    view = build_layer_view(module, input_shape)
    params = nnx.state(module, nnx.Param)
    matrices = {k: np.asarray(v) for k, v in jax.device_get(view.matrices(params)).items()}
    masks = layer_masks(view, masks)
    links = unit_links(module, view, sequential=sequential, activation=activation)
    _warn_unlinked(view, links, masks)
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


def layer_masks(view, masks) -> dict[str, np.ndarray]:
    """``{layer: (rows, cols)}`` bool masks from either that form (checked against the view's
    layers and shapes) or a mask pytree shaped like the module's ``nnx.Param`` state."""
    if isinstance(masks, nnx.State) or any(isinstance(v, Mapping) for v in masks.values()):
        try:
            read = view.matrices(masks)
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"masks: a pytree that is not shaped like the module's parameters "
                             f"({type(e).__name__}: {e})") from None  # fmt: skip
        return {k: np.asarray(v, bool) for k, v in jax.device_get(read).items()}
    shapes = {s.name: s.shape for s in view.layers}
    for name, mask in masks.items():
        if name not in shapes:
            raise ValueError(f"masks: no layer {name!r}; the layers are {', '.join(shapes)}")
        if np.shape(mask) != shapes[name]:
            raise ValueError(f"masks[{name!r}]: shape {np.shape(mask)}, the layer's (rows, cols) "
                             f"matrix is {shapes[name]}")  # fmt: skip
    return {k: np.asarray(v, bool) for k, v in masks.items()}


def _warn_unlinked(view, links, masks) -> None:
    """A warning naming the layers whose unused units no link lets the export remove."""
    linked = {p for link in links for p in link.producers}
    lost = {s.name: int((~masks[s.name].any(axis=1)).sum()) for s in view.layers[:-1]
            if s.name in masks and s.name not in linked}  # fmt: skip
    lost = {k: n for k, n in lost.items() if n}
    if lost:
        where = ", ".join(f"{k} ({n} units)" for k, n in lost.items())
        warnings.warn(f"export_network: the masks leave units of {where} unused, but how those "
                      "layers reach the next is unknown, so they stay: pass sequential=True "
                      "and activation=..., or give the module an `activation` attribute",
                      stacklevel=3)  # fmt: skip


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
