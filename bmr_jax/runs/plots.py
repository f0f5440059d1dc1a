"""The paper's figures (METHOD.md section 7), drawn from run folders only.

1. Rows = networks, columns = ACC, ECE, NLL against block, one line per method (one dataset).
2. Pruned fraction of BMR-S&S against block, one panel per dataset, one line per network.
3. Per-layer CDF of |posterior-median weight| (log x axis; pruned weights left out), one row
   per network, one line per method.
4. First-layer weights as images, one row per run: the first six units' incoming weights
   (first input channel) as square images -- 28x28 receptive fields for the MLP, 5x5
   filters for LeNet.

Each figure is saved as ``FILE.png`` and ``FILE.pdf``.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bmr_jax.errors import BmrJaxError  # noqa: E402
from bmr_jax.runs.folder import RunFolder, atomic_write  # noqa: E402
from bmr_jax.runs.report import METHOD_ORDER, NET_ORDER, paper_rank  # noqa: E402

LABELS = {"flat_map": "Flat-MAP", "flat_ff": "Flat-FF", "tiered_ff": "Tiered-FF",
          "bmr_ss": "BMR-S&S", "bmr_rhs": "BMR-RHS", "bmr_units": "BMR units"}  # fmt: skip


class PlotError(BmrJaxError):
    """The run folders given cannot make the requested figure."""


class Run:
    """What a figure needs from one run folder."""

    def __init__(self, path):
        folder = RunFolder(path)
        self.folder = folder
        self.config = folder.read_config()
        self.metrics = folder.metrics()
        self.method, self.net = self.config.method, self.config.net.name
        self.dataset = self.config.data.name

    def series(self, key):
        """``(blocks, values)`` of the blocks that have ``key`` (test metrics may be every k-th)."""
        kept = [r for r in self.metrics if r.get(key) is not None]
        return [r["block"] for r in kept], [r[key] for r in kept]

    def posterior(self):
        """``(weights, masks)`` per layer, in the order of the network's forward pass (run
        folders written before that order was kept stored the layers alphabetically)."""
        if not self.folder.posterior_path.is_file():
            raise PlotError(f"{self.folder.path}: no posterior.npz (the run is not finished)")
        try:
            weights, masks = self.folder.load_posterior()
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            reason = type(e).__name__
            raise PlotError(f"{self.folder.posterior_path}: unreadable ({reason})") from None
        order = _forward_order(self.net, self.config.net.preset, self.dataset)
        names = sorted(weights, key=lambda k: order.index(k) if k in order else len(order))
        return {k: weights[k] for k in names}, masks


def _forward_order(net: str, preset: str, dataset: str) -> list[str]:
    """Layer names of ``net`` in the order its forward pass calls them."""
    from flax import nnx

    from bmr_jax import nets
    from bmr_jax.bayes.layers import build_layer_view

    channels = 3 if dataset.startswith("cifar") else 1
    size = nets.get_net_spec(net).image_size or (32 if channels == 3 else 28)
    shape = (size, size, channels)
    module = nets.create_net(net, 100 if dataset == "cifar100" else 10, shape, preset,
                             rngs=nnx.Rngs(0))  # fmt: skip
    return build_layer_view(module, shape).names()


def _label(run: Run, runs: list[Run], name: str) -> str:
    """``name``, with the run folder's name added when another run of the same dataset and
    network has the same name (e.g. two BMR-S&S variants)."""
    same = [r for r in runs if (r.dataset, r.net, r.method) == (run.dataset, run.net, run.method)]
    return name if len(same) < 2 else f"{name} ({run.folder.path.name})"


def _order(values, order):
    return sorted(set(values), key=lambda v: paper_rank(v, order))


def _save(fig, out) -> list[Path]:
    """Renders ``fig`` as ``out.png`` and ``out.pdf``, then writes both atomically (an
    unwritable ``out`` raises :class:`OutputError` naming the file)."""
    out = Path(out)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    try:
        images = [_render(fig, path.suffix[1:]) for path in paths]
    finally:
        plt.close(fig)
    for path, image in zip(paths, images, strict=True):
        atomic_write(path, image)
    return paths


def _render(fig, file_format: str) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=file_format, dpi=150, bbox_inches="tight")
    return buffer.getvalue()


def figure1(runs: list[Run], out) -> list[Path]:
    datasets = {r.dataset for r in runs}
    if len(datasets) != 1:
        raise PlotError(f"figure 1 draws one dataset at a time; got {sorted(datasets)}")
    nets = _order([r.net for r in runs], NET_ORDER)
    fig, axes = plt.subplots(
        len(nets), 3, figsize=(11, 2.6 * len(nets)), squeeze=False, layout="constrained"
    )
    for row, net in enumerate(nets):
        for run in sorted((r for r in runs if r.net == net),
                          key=lambda r: paper_rank(r.method, METHOD_ORDER)):  # fmt: skip
            for col, key in enumerate(("acc", "ece", "nll")):
                label = _label(run, runs, LABELS.get(run.method, run.method))
                axes[row, col].plot(*run.series(key), label=label)
        for col, key in enumerate(("ACC", "ECE", "NLL")):
            axes[row, col].set_title(f"{net}: {key}", fontsize=9)
            axes[row, col].set_xlabel("block")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{next(iter(datasets))}: test metrics per block")
    return _save(fig, out)


def figure2(runs: list[Run], out) -> list[Path]:
    bmr = [r for r in runs if r.method == "bmr_ss"]
    if not bmr:
        raise PlotError("figure 2 needs BMR-S&S runs (method bmr_ss)")
    datasets = _order([r.dataset for r in bmr], ("fashion_mnist", "cifar10", "cifar100"))
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(4 * len(datasets), 3), squeeze=False, layout="constrained"
    )
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for run in sorted((r for r in bmr if r.dataset == dataset),
                          key=lambda r: paper_rank(r.net, NET_ORDER)):  # fmt: skip
            ax.plot(*run.series("pruned_fraction"), label=_label(run, bmr, run.net))
        ax.set(title=dataset, xlabel="block", ylabel="pruned fraction", ylim=(0, 1))
        ax.legend(fontsize=8)
    return _save(fig, out)


def figure3(runs: list[Run], out) -> list[Path]:
    nets = _order([r.net for r in runs], NET_ORDER)
    posteriors = {id(r): r.posterior() for r in runs}
    layers = max(len(posteriors[id(r)][0]) for r in runs)
    fig, axes = plt.subplots(len(nets), layers, figsize=(2.8 * layers, 2.6 * len(nets)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for row, net in enumerate(nets):
        for run in (r for r in runs if r.net == net):
            weights, masks = posteriors[id(run)]
            for col, (name, w) in enumerate(weights.items()):
                kept = np.abs(w[masks[name]])
                kept = np.sort(kept[kept > 0])
                if kept.size:
                    cdf = np.arange(1, kept.size + 1) / kept.size
                    label = _label(run, runs, LABELS.get(run.method, run.method))
                    axes[row, col].plot(kept, cdf, label=label)
                axes[row, col].set_xscale("log")
                axes[row, col].set_title(f"{net}: {name}", fontsize=8)
        axes[row, 0].set_ylabel("CDF of |w|")
        axes[row, 0].legend(fontsize=7)
    return _save(fig, out)


def figure4(runs: list[Run], out) -> list[Path]:
    channels = {"cifar10": 3, "cifar100": 3}
    rows = sorted(runs, key=lambda r: (paper_rank(r.net, NET_ORDER),
                                       paper_rank(r.method, METHOD_ORDER)))  # fmt: skip
    fig, axes = plt.subplots(
        len(rows), 6, figsize=(12, 2.2 * len(rows)), squeeze=False, layout="constrained"
    )
    for row, run in enumerate(rows):
        weights, _ = run.posterior()
        first = next(iter(weights.values()))[:, :-1]  # drop the bias column
        label = f"{run.net} / {LABELS.get(run.method, run.method)}"
        for ax in axes[row]:
            ax.axis("off")
        c = channels.get(run.dataset, 1)
        side = int(round(math.sqrt(first.shape[1] // c)))
        for k in range(min(6, first.shape[0])):
            kernel = first[k].reshape(side, side, c)[..., 0]
            limit = np.abs(kernel).max() or 1.0
            axes[row, k].imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    return _save(fig, out)


FIGURES = {1: figure1, 2: figure2, 3: figure3, 4: figure4}


def plot(run_paths, figure: int, out) -> list[Path]:
    """Draws figure ``figure`` from the run folders ``run_paths``; returns the files written."""
    if figure not in FIGURES:
        raise PlotError(f"unknown figure {figure}; allowed: 1, 2, 3, 4")
    runs = [Run(p) for p in run_paths]
    if not runs:
        raise PlotError("no run folders given")
    return FIGURES[figure](runs, out)
