"""Saving an :class:`~bmr_jax.export.network.Exported` network to a folder and loading it.

The folder's files are described in :mod:`bmr_jax.export.archive`. :func:`load` returns an
ordinary Flax NNX module, callable on NHWC float32 images (as ``bmr_jax.data.load`` gives them)
and returning logits; the dense layers recorded as sparse at export time compute with BCOO
kernels unless ``sparse=False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx

from bmr_jax.errors import ConfigError
from bmr_jax.export import archive
from bmr_jax.export.architecture import build_module
from bmr_jax.export.network import Exported
from bmr_jax.export.sparse import ComputeChoice, choose_compute, to_sparse

SPARSE_MODES = ("auto", "never", "always")
ARCHITECTURE = "architecture.json"


def _dotted(path) -> str:
    return ".".join(map(str, path))


def parameters(module: nnx.Module) -> dict[str, np.ndarray]:
    """``{dotted path: value}`` of every ``nnx.Param`` of ``module``."""
    return {_dotted(p): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(module,
                                                                                    nnx.Param))}


def dense_layers(module: nnx.Module, order=()) -> dict[str, nnx.Linear]:
    """``{dotted path: layer}`` of the ``nnx.Linear`` layers (candidates for sparse compute),
    those named in ``order`` first and in its order."""
    layers = {_dotted(p): m for p, m in nnx.iter_modules(module) if type(m) is nnx.Linear}
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(layers.items(), key=lambda item: rank.get(item[0], len(rank))))


def compute_choices(module: nnx.Module, sparse: str, batch: int, order=()) -> list[ComputeChoice]:
    """Dense or sparse compute for every dense layer (in the layer ``order`` given):
    ``never`` (the default) and ``always`` decide without a measurement, so the same network
    gives the same files; ``auto`` times both on this machine
    (:func:`bmr_jax.export.sparse.choose_compute`), so two exports may differ, and records the
    times it decided by in ``architecture.json``."""
    if sparse not in SPARSE_MODES:
        raise ConfigError(f"sparse: expected one of {', '.join(SPARSE_MODES)}, got {sparse!r}")
    choices = []
    for name, layer in dense_layers(module, order).items():
        kernel = np.asarray(layer.kernel[...])
        bias = None if layer.bias is None else np.asarray(layer.bias[...])
        if sparse == "auto":
            choices.append(choose_compute(name, kernel, bias, batch=batch))
        else:
            density = float(np.count_nonzero(kernel) / kernel.size)
            choices.append(ComputeChoice(name, density, None, None, sparse == "always"))
    return choices


def save(exported: Exported, out, *, file_format: str = "safetensors", sparse: str = "never",
         batch: int = 1000, source: dict | None = None) -> list[ComputeChoice]:  # fmt: skip
    """Writes ``exported`` to the folder ``out``; returns the per-layer compute choices.

    ``sparse``: ``auto`` (measure each dense layer at ``batch`` inputs), ``always``, ``never``.
    ``source``: what the network was exported from (recorded as is). Any architecture file
    already in ``out`` is removed first, so an interrupted save leaves no folder that reads
    as complete.
    """
    if file_format not in archive.FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(archive.FORMATS)}, got "
                          f"{file_format!r}")  # fmt: skip
    choices = compute_choices(exported.module, sparse, batch, exported.architecture["layers"])
    out = Path(out)
    if out.is_dir():
        (out / ARCHITECTURE).unlink(missing_ok=True)
    suffix = "safetensors" if file_format == "safetensors" else "npz"
    files = {"weights": f"weights.{suffix}"}
    index = {"weights": archive.write_tensors(out / files["weights"],
                                              parameters(exported.module), file_format)}
    if exported.scales is not None:
        files["posterior"] = f"posterior.{suffix}"
        scales = {_dotted(p): s for p, s in exported.scales.items()}
        index["posterior"] = archive.write_tensors(out / files["posterior"], scales, file_format)
    archive.write_json(out / ARCHITECTURE, {
        "format": archive.FORMAT, "version": archive.VERSION, "file_format": file_format,
        "architecture": exported.architecture, "files": files, "tensors": index,
        "sparse_layers": [c.name for c in choices if c.sparse],
        "compute": [c.line() for c in choices], "layers": [c.line() for c in exported.layers],
        "units": {k: list(v) for k, v in exported.units.items()}, "source": source or {},
    })  # fmt: skip
    return choices


def read_description(folder) -> dict:
    """The export folder's ``architecture.json``, checked."""
    folder = Path(folder)
    if not (folder / ARCHITECTURE).is_file():
        raise archive.ExportError(f"{folder}: not a bmr-jax export (no {ARCHITECTURE})")
    return archive.read_json(folder / ARCHITECTURE)


def load(folder, *, sparse: bool = True, template: nnx.Module | None = None) -> nnx.Module:
    """The exported network in ``folder`` as a Flax NNX module (eval mode): weights bit for
    bit as saved; ``sparse=False`` computes every layer densely. ``template``: the original
    network, for one that is not in the registry."""
    folder = Path(folder)
    description = read_description(folder)
    module = build_module(description["architecture"], template)
    tensors = archive.read_tensors(folder / description["files"]["weights"],
                                   description["tensors"]["weights"],
                                   description["file_format"])  # fmt: skip
    flat = []
    for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        name = _dotted(path)
        if name not in tensors or tensors[name].shape != variable[...].shape:
            raise archive.ExportError(f"{folder}: weights for {name} are missing or misshapen")
        flat.append((path, nnx.Param(tensors[name])))
    nnx.update(module, nnx.from_flat_state(flat))
    if sparse:
        to_sparse(module, description["sparse_layers"])
    return module


def load_scales(folder) -> dict[tuple, np.ndarray]:
    """``{Param path: standard deviation}`` of an export made with the posterior (for
    :func:`bmr_jax.export.predictive_probs` with ``load(folder, sparse=False)``)."""
    folder = Path(folder)
    description = read_description(folder)
    if "posterior" not in description["files"]:
        raise archive.ExportError(f"{folder}: exported without the posterior (--posterior)")
    scales = archive.read_tensors(folder / description["files"]["posterior"],
                                  description["tensors"]["posterior"],
                                  description["file_format"])  # fmt: skip
    return {tuple(int(p) if p.isdigit() else p for p in k.split(".")): v
            for k, v in scales.items()}  # fmt: skip
