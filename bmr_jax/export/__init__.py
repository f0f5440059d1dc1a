"""Export a pruned network as a smaller one: every unit BMR left unused removed, the rest in
sparse storage, the posterior optionally kept.

    from bmr_jax import export
    report = export.export_run("runs/quickstart", "exported/")   # or: bmr-jax export RUN --out DIR
    net = export.load("exported/")                               # a Flax NNX module
    logits = net(images)                                         # NHWC float32, as data.load

With ``posterior=True`` the standard deviations of the kept weights are saved too, and
``export.predictive_probs(export.load(DIR, sparse=False), export.load_scales(DIR), images,
key=...)`` gives the Bayesian predictive of the smaller network.

Modules: :mod:`~bmr_jax.bayes.units` (which rows feed which columns),
:mod:`~bmr_jax.bayes.shrink` (removing units exactly), :mod:`~bmr_jax.export.architecture`
(the narrower module), :mod:`~bmr_jax.export.sparse` (sparse compute, measured),
:mod:`~bmr_jax.export.archive` (the files), :mod:`~bmr_jax.export.folder` (save and load),
:mod:`~bmr_jax.export.from_run` (a run folder as input), :mod:`~bmr_jax.export.timing`
(latency side by side).
"""

from __future__ import annotations

from bmr_jax.export.archive import ExportError
from bmr_jax.export.folder import load, load_scales, read_description, save
from bmr_jax.export.network import Exported, LayerChange, export_network, predictive_probs
from bmr_jax.export.sparse import ComputeChoice, SparseLinear
from bmr_jax.export.timing import latencies, speedup

# from_run builds methods, whose evaluation uses this package's shrinking: imported on use
_FROM_RUN = ("ExportReport", "RestoredRun", "RunNetwork", "export_run", "read_run", "restore_run")


def __getattr__(name: str):
    if name in _FROM_RUN:
        from bmr_jax.export import from_run

        return getattr(from_run, name)
    raise AttributeError(f"module 'bmr_jax.export' has no attribute {name!r}")


__all__ = [
    "ComputeChoice",
    "ExportError",
    "ExportReport",
    "Exported",
    "LayerChange",
    "RestoredRun",
    "RunNetwork",
    "SparseLinear",
    "export_network",
    "export_run",
    "latencies",
    "load",
    "load_scales",
    "predictive_probs",
    "read_description",
    "read_run",
    "restore_run",
    "save",
    "speedup",
]
