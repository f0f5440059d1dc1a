"""Export a pruned network as a smaller one: every unit BMR left unused removed, the rest in
sparse storage, the posterior optionally kept.

    from bmr_jax import export
    report = export.export_run("runs/quickstart", "exported/")   # or: bmr-jax export RUN --out DIR
    net = export.load("exported/")                               # a Flax NNX module
    logits = net(images)                                         # NHWC float32, as data.load

With ``posterior=True`` the standard deviations of the kept weights are saved too, and
``export.predictive_probs(export.load(DIR, sparse=False), export.load_scales(DIR), images,
key=...)`` gives the Bayesian predictive of the smaller network.

Modules: :mod:`~bmr_jax.export.units` (which rows feed which columns),
:mod:`~bmr_jax.export.shrink` (removing units exactly), :mod:`~bmr_jax.export.architecture`
(the narrower module), :mod:`~bmr_jax.export.sparse` (sparse compute, measured),
:mod:`~bmr_jax.export.archive` (the files), :mod:`~bmr_jax.export.folder` (save and load),
:mod:`~bmr_jax.export.from_run` (a run folder as input).
"""

from __future__ import annotations

from dataclasses import dataclass

from bmr_jax.export.archive import ExportError
from bmr_jax.export.folder import load, load_scales, read_description, save
from bmr_jax.export.from_run import RunNetwork, read_run
from bmr_jax.export.network import Exported, LayerChange, export_network, predictive_probs
from bmr_jax.export.sparse import ComputeChoice, SparseLinear


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_run` did: the exported network and the per-layer compute choices."""

    exported: Exported
    choices: tuple[ComputeChoice, ...]

    def lines(self) -> list[str]:
        """One line per layer (units and inputs before and after), then per dense layer the
        compute choice."""
        return [*(c.line() for c in self.exported.layers), *(c.line() for c in self.choices)]


def export_run(run, out, *, posterior: bool = False, file_format: str = "safetensors",
               sparse: str = "auto", batch: int = 1000, data_dir=None) -> ExportReport:  # fmt: skip
    """Exports the finished run in folder ``run`` to folder ``out`` (see the module docstring;
    ``sparse`` and ``batch`` as in :func:`save`)."""
    source = read_run(run, posterior=posterior, data_dir=data_dir)
    config = source.config
    exported = export_network(source.module, source.input_shape, source.masks,
                              net=config.net.name, preset=config.net.preset,
                              num_classes=source.num_classes, sequential=source.sequential,
                              scales=source.scales)  # fmt: skip
    described = {"run": str(run), "method": config.method, "dataset": config.data.name,
                 "padding": config.data.padding, "seed": config.seed,
                 **{k: source.summary.get(k) for k in ("acc", "nll", "ece", "pruned_fraction")}}
    choices = save(exported, out, file_format=file_format, sparse=sparse, batch=batch,
                   source=described)  # fmt: skip
    return ExportReport(exported, tuple(choices))


__all__ = [
    "ComputeChoice",
    "ExportError",
    "ExportReport",
    "Exported",
    "LayerChange",
    "RunNetwork",
    "SparseLinear",
    "export_network",
    "export_run",
    "load",
    "load_scales",
    "predictive_probs",
    "read_description",
    "read_run",
    "save",
]
