"""The posterior predictive computed on the network without the units the masks leave unused.

Every posterior draw is made exactly as :func:`bmr_jax.inference.evaluate.make_predictive`
makes it (all of ``Z``, the same keys), then the kept rows and columns of every layer matrix
are gathered into the narrower network of :mod:`bmr_jax.export` and only that network is
applied. The units removed are those that output zero or that nothing reads (never constant
folding, which does not hold under a posterior; :mod:`bmr_jax.bayes.shrink`): a pruned weight
is ``scale * 1e-12 * Z``, so what they would have contributed is below float32 resolution, and
the test metrics agree with the full network's to float tolerance while the forward passes,
which dominate an evaluation, cost what the smaller network costs.

Each network shape costs a compilation, and the kept units change a little at every reduce.
So :func:`kept_units` keeps a few removed units back (exact as well: they output zero or are
not read), to bring each link's count up to a rung of the ladder ``ceil(n 2^(-j/4))``
(``OCTAVE_STEP``), and the function :func:`shrunk_apply` returns reads the kept rows and
columns as an argument: every mask whose counts land on the same rungs runs the same compiled
program.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bmr_jax.bayes.layers import build_layer_view
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.bayes.narrow import narrow, with_layers
from bmr_jax.bayes.shrink import shrink
from bmr_jax.bayes.units import UnitLink, unit_links

WORTH = 0.5  # shrink only when the smaller network costs at most this fraction of the FLOPs
OCTAVE_STEP = 0.25  # kept units per link: n 2^(-j/4) rounded up, at most 19 % above need


def rung(kept: int, total: int, step: float = OCTAVE_STEP) -> int:
    """The smallest ``ceil(total * 2**(-j * step))`` (``j = 0, 1, ...``) that is at least
    ``kept``: the rungs of 500 run 500, 421, 354, 298, 250, ..., 63, 53, 45, ..., so
    ``rung(47, 500) == 53`` and ``rung(250, 500) == 250``."""
    size, j = total, 1
    while size > 1:
        below = math.ceil(total * 2.0 ** (-j * step))
        if below < kept:
            break
        size, j = min(size, below), j + 1
    return size


def links_of(bnet: BayesianNetwork, *, sequential: bool) -> list[UnitLink]:
    """The network's units (:func:`bmr_jax.bayes.units.unit_links`), for :func:`kept_units`."""
    return unit_links(bnet.initial_module(), bnet.view, sequential=sequential)


def kept_units(bnet: BayesianNetwork, masks: Mapping[str, np.ndarray], links: list[UnitLink],
               *, worth: float = 1.0, ladder: bool = True) -> dict | None:  # fmt: skip
    """``{layer: (kept rows, kept columns)}`` once the units of ``links`` (:func:`links_of`)
    that ``masks`` leave unused are gone (index arrays; columns include the bias), each link's
    count brought up to its :func:`rung` with ``ladder``; ``None`` when there is no unit to
    remove, or when the smaller network would still cost more than ``worth`` times the full
    one's FLOPs (``2 rows cols positions`` per layer; a new shape costs a compilation)."""
    view = bnet.view
    ones = {s.name: np.ones(s.shape, np.float32) for s in view.layers}
    kept = shrink(view, links, ones, {k: np.asarray(v) for k, v in masks.items()},
                  fold_constants=False, pad=rung if ladder else None)  # fmt: skip
    if all(kept.matrices[s.name].shape == s.shape for s in view.layers):
        return None
    full = sum(s.size * s.positions for s in view.layers)
    if sum(kept.matrices[s.name].size * s.positions for s in view.layers) > worth * full:
        return None
    return {s.name: (kept.rows[s.name], kept.cols[s.name]) for s in view.layers}


def shape_of(kept: Mapping[str, tuple]) -> tuple:
    """The shrunk network's shape, ``((layer, rows, cols), ...)``: what one compilation of
    :func:`shrunk_apply`'s function serves."""
    return tuple((n, len(rows), len(cols)) for n, (rows, cols) in sorted(kept.items()))


def index_arrays(kept: Mapping[str, tuple]) -> dict:
    """``kept`` as the ``index`` argument of :func:`shrunk_apply`'s function (int32 arrays)."""
    return {n: (jnp.asarray(np.asarray(rows, np.int32)), jnp.asarray(np.asarray(cols, np.int32)))
            for n, (rows, cols) in kept.items()}  # fmt: skip


def shrunk_apply(bnet: BayesianNetwork, shape: tuple, input_shape) -> Callable:
    """``apply(net_params, x, index) -> outputs`` of the network narrowed to ``shape``
    (:func:`shape_of`), reading the full network's parameters (an ``nnx.State``, as
    ``bnet.network_params`` gives them) at the rows and columns of ``index``
    (:func:`index_arrays` of kept units of that shape)."""
    view = bnet.view
    small = narrow(bnet.initial_module(), input_shape, {n: (r, c) for n, r, c in shape})
    small_view = build_layer_view(small, input_shape)
    graphdef, template, rest = nnx.split(small, nnx.Param, ...)

    def apply(net_params, x, index):
        matrices = view.matrices(net_params)
        gathered = {n: matrices[n][rows[:, None], cols[None, :]]
                    for n, (rows, cols) in index.items()}  # fmt: skip
        params = with_layers(small_view, template, gathered,
                             dict(nnx.to_flat_state(net_params)))  # fmt: skip
        return nnx.merge(graphdef, params, rest)(x)

    return apply


def chunk_size(bnet: BayesianNetwork, kept: Mapping[str, tuple], full_chunk: int) -> int:
    """Test images per chunk on the shrunk network: ``full_chunk`` times the ratio of all units
    to the units kept. Every chunk draws the posterior samples again, which on a shrunk network
    is most of the cost, while the activations a chunk holds stay about as large."""
    units = sum(s.rows for s in bnet.view.layers)
    return full_chunk * max(1, units // sum(len(rows) for rows, _ in kept.values()))
