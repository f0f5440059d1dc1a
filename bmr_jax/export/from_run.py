"""A finished run folder as the input of an export (:func:`read_run`: its network at the
posterior median, its masks and, for a mean-field posterior, the standard deviations of its
weights) and its export (:func:`export_run`).

The run's final checkpoint (which a finished run keeps) is read back exactly as a resumed run
would read it, so the exported weights are the run's own: the network is rebuilt from
``config.yaml`` on the run's dataset (``BMR_JAX_DATA`` or ``data_dir``).

Weights are ``W = s * gamma * Z`` (METHOD.md section 2) with ``s`` the prior's scales (for
BMR-S&S, Tiered-FF and BMR-RHS themselves latent). The point export takes every latent at its
posterior median. The posterior export keeps ``Z``'s Gaussian and fixes the scale latents at
their medians: ``W ~ N(m Z_loc, (m Z_scale)^2)`` with ``m = s * gamma`` at the medians (exact
for Flat-FF, whose scales are fixed; otherwise a conditional of the run's posterior, whose
predictive the export's then approximates).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from numpyro import handlers

from bmr_jax import methods, nets
from bmr_jax.bayes.guides import MeanFieldGuide
from bmr_jax.export.archive import ExportError
from bmr_jax.export.folder import save
from bmr_jax.export.network import Exported, export_network
from bmr_jax.export.sparse import ComputeChoice
from bmr_jax.runs.experiment import build_setup, load_dataset
from bmr_jax.runs.folder import MARKER, RunFolder


@dataclass(frozen=True)
class RunNetwork:
    """What :func:`read_run` gives: the run's network and what the export needs of it.

    Attributes:
      module: the registry network with the posterior-median weights (eval mode).
      masks: ``{layer: (rows, cols)}`` True = kept.
      scales: ``{layer: (rows, cols)}`` weight standard deviations (``posterior=True``).
      config: the run's resolved config; summary: its ``summary.json``.
      input_shape, num_classes, sequential: of the network.
    """

    module: nnx.Module
    masks: dict
    scales: dict | None
    config: object
    summary: dict
    input_shape: tuple
    num_classes: int
    sequential: bool


@dataclass(frozen=True)
class RestoredRun:
    """A finished run rebuilt from its folder: config, dataset, method set-up and the final
    ``bmr_jax.methods.RunState``."""

    config: object
    dataset: object
    setup: object
    state: object


def restore_run(path, *, data_dir=None) -> RestoredRun:
    """The finished run in ``path`` at its final checkpoint; :class:`ExportError` (one line)
    for a folder that is not a finished run with its final checkpoint."""
    folder = RunFolder(path)
    if not folder.path.is_dir() or not (folder.path / MARKER).is_file():
        raise ExportError(f"{folder.path}: not a bmr-jax run folder")
    config = folder.read_config()
    if not folder.is_finished():
        raise ExportError(f"{folder.path}: the run is not finished (no summary.json); run it "
                          "to the end first")  # fmt: skip
    dataset = load_dataset(config, data_dir)
    setup = build_setup(config, dataset)
    saved = folder.load_checkpoint(methods.initial_state(setup), log=lambda line: None)
    if saved is None or saved[0].block != config.train.blocks or saved[0].step:
        raise ExportError(f"{folder.path}: the final checkpoint is missing or unreadable")
    return RestoredRun(config, dataset, setup, saved[0])


def read_run(path, *, posterior: bool = False, data_dir=None) -> RunNetwork:
    """The finished run in ``path`` (:func:`restore_run`) as the input of an export;
    :class:`ExportError` for ``posterior`` with a guide without a standard deviation per
    weight."""
    run = restore_run(path, data_dir=data_dir)
    config, dataset, setup, state = run.config, run.dataset, run.setup, run.state
    if posterior and not isinstance(setup.guide, MeanFieldGuide):
        raise ExportError(f"{path}: --posterior needs a mean-field guide; {config.method} "
                          f"has a {setup.guide.name} guide")  # fmt: skip
    params = setup.trainer.params(state.train)
    medians = setup.guide.median(params)
    module = nets.create_net(config.net.name, dataset.num_classes, dataset.image_shape,
                             config.net.preset, rngs=nnx.Rngs(0))  # fmt: skip
    nnx.update(module, _network_params(setup, params, medians, state.gamma))
    module.eval()
    masks = {k: np.asarray(v) for k, v in jax.device_get(state.masks).items()}
    scales = _weight_scales(setup, params, medians, state.gamma) if posterior else None
    summary = RunFolder(path).read_summary()
    return RunNetwork(module, masks, scales, config, summary, dataset.image_shape,
                      dataset.num_classes, nets.get_net_spec(config.net.name).sequential)


def _network_params(setup, params, latents, gamma):
    with handlers.seed(rng_seed=0), handlers.substitute(data={**params, **latents}):
        return setup.bnet.network_params(gamma)


def _weight_scales(setup, params, medians, gamma) -> dict:
    """``|s * gamma| * Z_scale`` per layer, ``s`` at the medians (``Z`` set to ones gives
    ``W = s * gamma``)."""
    view = setup.bnet.view
    ones = {f"{s.name}/z": jnp.ones(s.shape) for s in view.bayesian_layers}
    factor = view.matrices(_network_params(setup, params, {**medians, **ones}, gamma))
    return {s.name: np.asarray(jnp.abs(factor[s.name]) * params[f"{s.name}/z/scale"])
            for s in view.bayesian_layers}  # fmt: skip


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
               sparse: str = "never", batch: int = 1000,
               data_dir=None) -> ExportReport:  # fmt: skip
    """Exports the finished run in folder ``run`` to folder ``out``: :func:`read_run`, then
    :func:`bmr_jax.export.export_network` and :func:`bmr_jax.export.save` (``sparse``,
    ``batch`` and ``file_format`` as there)."""
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
