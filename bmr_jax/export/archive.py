"""The export folder: weights other frameworks read, and a small architecture file.

    DIR/architecture.json   the architecture (:mod:`bmr_jax.export.architecture`), how each
                            tensor is stored, which dense layers compute sparse, the source
    DIR/weights.safetensors every parameter, named by its dotted path ("convs.0.kernel")
    DIR/posterior.safetensors  (``--posterior``) the standard deviation of every Bayesian
                            weight kept, same names

(``format="npz"`` writes ``.npz`` files instead.) Kernels keep Flax's layout (inputs first,
outputs last; ``(kh, kw, in, out)`` for convolutions), images are NHWC. Each tensor is stored
in whichever of three encodings takes fewest bytes, so a reader needs only these rules:

- ``dense``: the array itself, under its name;
- ``bitmask``: ``NAME.bitmask`` (uint8, ``numpy.packbits`` of the C-order flags of the
  non-zero entries) and ``NAME.values`` (the non-zero entries in C order);
- ``csr``: the array as a matrix of ``shape[-1]`` columns, ``NAME.indptr`` (int32),
  ``NAME.indices`` (uint16, or int32 beyond 65,535 columns) and ``NAME.values``.

Decoding gives back the very bits that were encoded. Files are written atomically.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bmr_jax.errors import BmrJaxError
from bmr_jax.export.sparse import nonzero
from bmr_jax.runs.folder import atomic_write

FORMAT = "bmr-jax-export"
VERSION = 1
FORMATS = ("safetensors", "npz")


class ExportError(BmrJaxError):
    """An export folder cannot be written or read (the message names the file)."""


def encode(name: str, array: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    """``(encoding, {stored name: array})`` of ``array`` in its smallest encoding."""
    array = np.ascontiguousarray(array)
    flags = nonzero(array).reshape(-1)
    values = array.reshape(-1)[flags]
    candidates = {"dense": {name: array}}
    if array.ndim >= 1 and array.size:
        candidates["bitmask"] = {f"{name}.bitmask": np.packbits(flags),
                                 f"{name}.values": values}  # fmt: skip
        cols = array.shape[-1]
        rows = flags.reshape(-1, cols)
        index_type = np.uint16 if cols <= np.iinfo(np.uint16).max else np.int32
        candidates["csr"] = {
            f"{name}.indptr": np.concatenate([[0], np.cumsum(rows.sum(axis=1))]).astype(np.int32),
            f"{name}.indices": np.nonzero(rows)[1].astype(index_type),
            f"{name}.values": values,
        }
    encoding = min(candidates, key=lambda e: sum(a.nbytes for a in candidates[e].values()))
    return encoding, candidates[encoding]


def decode(name: str, encoding: str, shape, dtype, stored: Mapping[str, np.ndarray]):
    """The array :func:`encode` encoded (bit for bit)."""
    if encoding == "dense":
        return np.asarray(stored[name]).reshape(shape)
    flat = np.zeros(math.prod(shape), dtype)
    if encoding == "bitmask":
        flags = np.unpackbits(stored[f"{name}.bitmask"], count=flat.size).astype(bool)
        flat[flags] = stored[f"{name}.values"]
        return flat.reshape(shape)
    if encoding == "csr":
        cols = shape[-1]
        indptr = stored[f"{name}.indptr"].astype(np.int64)
        rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        flat[rows * cols + stored[f"{name}.indices"].astype(np.int64)] = stored[f"{name}.values"]
        return flat.reshape(shape)
    raise ExportError(f"{name}: unknown tensor encoding {encoding!r}")


def write_tensors(path: Path, tensors: Mapping[str, np.ndarray], file_format: str) -> dict:
    """Writes ``tensors`` (each in its smallest encoding) to ``path``; returns ``{name:
    {"encoding", "shape", "dtype"}}`` for the architecture file."""
    stored, index = {}, {}
    for name, array in tensors.items():
        array = np.asarray(array)
        encoding, parts = encode(name, array)
        stored.update(parts)
        index[name] = {"encoding": encoding, "shape": list(array.shape), "dtype": str(array.dtype)}
    atomic_write(path, _serialise(stored, file_format))
    return index


def read_tensors(path: Path, index: Mapping[str, dict], file_format: str) -> dict:
    """``{name: array}`` written by :func:`write_tensors`."""
    stored = _deserialise(path, file_format)
    try:
        return {name: decode(name, info["encoding"], tuple(info["shape"]), np.dtype(info["dtype"]),
                             stored) for name, info in index.items()}  # fmt: skip
    except KeyError as e:
        raise ExportError(f"{path}: tensor {e.args[0]} is missing") from None


def _serialise(arrays: Mapping[str, np.ndarray], file_format: str) -> bytes:
    if file_format == "safetensors":
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _deserialise(path: Path, file_format: str) -> dict:
    try:
        if file_format == "safetensors":
            from safetensors.numpy import load

            return load(path.read_bytes())
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}
    except OSError as e:
        raise ExportError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    except Exception as e:  # the readers' own errors for a corrupt file
        raise ExportError(f"{path}: not a readable {file_format} file ({type(e).__name__})") \
            from None  # fmt: skip


def write_json(path: Path, content: dict) -> None:
    atomic_write(path, (json.dumps(content, indent=1) + "\n").encode())


def read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_bytes())
    except OSError as e:
        raise ExportError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    except ValueError:
        raise ExportError(f"{path}: not valid JSON") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ExportError(f"{path}: not a bmr-jax export (no \"format\": \"{FORMAT}\")")
    if content.get("version") != VERSION:
        raise ExportError(f"{path}: export format version {content.get('version')!r}; this "
                          f"bmr-jax reads version {VERSION}")  # fmt: skip
    return content
