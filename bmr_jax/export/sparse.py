"""Sparse compute for the unstructured sparsity left after the units are gone.

:class:`SparseLinear` is a dense layer whose kernel is a ``jax.experimental.sparse.BCOO``
matrix (the non-zero entries and their ``(input, output)`` indices). Whether it pays depends on
the density, the layer's shape, the batch and the machine, so :func:`choose_compute` measures
it: both versions of the layer compiled, timed alternately on the same input, medians compared.
Convolutions stay dense (``jax.experimental.sparse`` has no sparse convolution).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import sparse

from bmr_jax.bayes.narrow import PLACEHOLDER, replace_module

MAX_DENSITY = 0.5  # above this a sparse kernel is not even tried


class SparseLinear(nnx.Module):
    """``y = x @ K + b`` with ``K`` held as a BCOO matrix of its non-zero entries."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray | None):
        kernel = np.asarray(kernel, np.float32)
        index = np.argwhere(nonzero(kernel)).astype(np.int32)  # (nnz, 2)
        self.in_features, self.out_features = kernel.shape
        self.values = nnx.Param(jnp.asarray(kernel[index[:, 0], index[:, 1]]))
        self.indices = nnx.Variable(jnp.asarray(index))
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias, jnp.float32))

    def dense_kernel(self) -> np.ndarray:
        kernel = np.zeros((self.in_features, self.out_features), np.float32)
        index = np.asarray(self.indices[...])
        kernel[index[:, 0], index[:, 1]] = np.asarray(self.values[...])
        return kernel

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = sparse.BCOO((self.values[...], self.indices[...]),
                             shape=(self.in_features, self.out_features))  # fmt: skip
        y = x @ kernel
        return y if self.bias is None else y + self.bias[...]


def nonzero(array: np.ndarray) -> np.ndarray:
    """Entries whose bit pattern is not zero (``-0.0`` counts as a value, so that sparse
    storage gives back exactly what it was given)."""
    array = np.ascontiguousarray(array)
    return array.view(np.uint32 if array.dtype.itemsize == 4 else np.uint64) != 0


@dataclass(frozen=True)
class ComputeChoice:
    """What :func:`choose_compute` measured for one dense layer."""

    name: str
    density: float
    dense_seconds: float | None
    sparse_seconds: float | None
    sparse: bool

    def line(self) -> str:
        if self.dense_seconds is None:
            return f"{self.name}: dense (density {self.density:.3f}, sparse not tried)"
        choice = "sparse (BCOO)" if self.sparse else "dense"
        return (f"{self.name}: {choice}, density {self.density:.3f}: dense "
                f"{self.dense_seconds * 1e6:.0f} us, sparse {self.sparse_seconds * 1e6:.0f} us")


def choose_compute(name: str, kernel: np.ndarray, bias, *, batch: int = 1000,
                   repeats: int = 7, seed: int = 0) -> ComputeChoice:  # fmt: skip
    """Times the layer dense and sparse on a ``batch`` of standard-normal inputs and picks
    the faster (sparse only if it is at least 10 % faster; never above :data:`MAX_DENSITY`)."""
    density = float(nonzero(kernel).mean())
    if density > MAX_DENSITY:
        return ComputeChoice(name, density, None, None, False)
    # numpy's draws and placeholder initialisers: no XLA program per layer shape to build them
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((batch, kernel.shape[0]),
                                                                np.float32))  # fmt: skip
    dense_layer = nnx.Linear(*kernel.shape, use_bias=bias is not None, rngs=nnx.Rngs(0),
                             **PLACEHOLDER)  # fmt: skip
    dense_layer.kernel[...] = jnp.asarray(kernel)
    candidates = [dense_layer, SparseLinear(kernel, bias)]
    calls = [nnx.jit(lambda layer, x: layer(x)) for _ in candidates]
    for call, layer in zip(calls, candidates, strict=True):
        jax.block_until_ready(call(layer, x))  # compile
    seconds = [[], []]
    for _ in range(repeats):
        for i, (call, layer) in enumerate(zip(calls, candidates, strict=True)):
            start = time.perf_counter()
            jax.block_until_ready(call(layer, x))
            seconds[i].append(time.perf_counter() - start)
    dense_s, sparse_s = (float(np.median(s)) for s in seconds)
    return ComputeChoice(name, density, dense_s, sparse_s, sparse_s < 0.9 * dense_s)


def to_sparse(module: nnx.Module, names) -> nnx.Module:
    """Replaces the ``nnx.Linear`` layers at the dotted paths ``names`` by
    :class:`SparseLinear` ones with the same weights (in place; returned)."""
    modules = dict(nnx.iter_modules(module))
    for name in names:
        path = tuple(int(p) if p.isdigit() else p for p in name.split("."))
        layer = modules[path]
        bias = None if layer.bias is None else np.asarray(layer.bias[...])
        replacement = SparseLinear(np.asarray(layer.kernel[...]), bias)
        replace_module(modules, path, replacement)
    return module
