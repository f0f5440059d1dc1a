"""What every figure shares: the paper's names, one fixed colour and marker per method (and per
network), runs grouped into series over seeds, a training-step axis and a caption line.

A *series* is the runs of one dataset, network, method and configuration that differ only in
their seed: figures draw its mean with markers and, when it has several seeds, a band of one
standard deviation. Series of the same method that differ in other settings (a grid's variants)
share the method's colour and differ in line style; their legend entries name the variant (a
grid's ``variant=`` label, else the settings in which they differ).
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, MultipleLocator  # noqa: E402

from bmr_jax.runs.config import flat_settings  # noqa: E402
from bmr_jax.runs.folder import atomic_write  # noqa: E402

METHODS = {  # method -> (the paper's name, colour, marker)
    "flat_map": ("Flat-MAP", "#1f77b4", "o"),
    "flat_ff": ("Flat-FF", "#ff7f0e", "s"),
    "tiered_ff": ("Tiered-FF", "#2ca02c", "^"),
    "bmr_ss": ("BMR-S&S", "#d62728", "D"),
    "bmr_rhs": ("BMR-RHS", "#9467bd", "v"),
    "bmr_units": ("BMR units", "#8c564b", "P"),
    "sparse_vd": ("Sparse VD", "#bcbd22", "X"),
    "gmp": ("GMP", "#7f7f7f", "h"),
    "ivon_bmr": ("IVON + BMR", "#393b79", "*"),
    "bmr_group": ("Group BMR", "#e6550d", "o"),
    "bmr_multipliers": ("BMR, unit multipliers", "#d62728", "s"),
    "bmrs": ("BMRS", "#17becf", "v"),
    "l1_filters": ("L1 filters", "#7f7f7f", "h"),
}
NETS = {  # network -> (name, colour, marker)
    "mlp": ("MLP", "#17becf", "o"),
    "lenet5": ("LeNet-5", "#e377c2", "s"),
    "vit": ("ViT", "#bcbd22", "^"),
    "mixer": ("MLP-Mixer", "#7f7f7f", "D"),
    "lenet_300_100": ("LeNet-300-100", "#17becf", "v"),
    "lenet5_caffe": ("LeNet-5-Caffe", "#e377c2", "P"),
}
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "mnist_mini": "MNIST (mini)",
            "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}  # fmt: skip
LINESTYLES = ("-", "--", ":", "-.")
VARIANT_COLOURS = (
    "#000000",
    "#e69f00",
    "#56b4e9",
    "#009e73",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#cc79a7",
    "#999999",
    "#882255",
    "#44aa99",
    "#117733",
)  # Okabe-Ito and more


def method_style(method: str):
    return METHODS.get(method, (method, "#000000", "x"))


def net_style(net: str):
    return NETS.get(net, (net, "#000000", "x"))


def dataset_name(dataset: str) -> str:
    return DATASETS.get(dataset, dataset)


class Series:
    """Runs that differ only in their seed; ``label`` names the variant when needed."""

    def __init__(self, runs: list):
        self.runs = sorted(runs, key=lambda r: r.config.seed)
        first = self.runs[0]
        self.dataset, self.net, self.method = first.dataset, first.net, first.method
        self.variant, self.style = "", 0

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]

    def values(self, key: str):
        """``(steps, mean, sd or None)`` over the seeds at the steps every seed has."""
        per_run = [dict(zip(*run.series(key, x="step"), strict=True)) for run in self.runs]
        steps = sorted(set.intersection(*(set(d) for d in per_run)))
        table = np.array([[d[s] for s in steps] for d in per_run], float).reshape(
            len(per_run), len(steps)
        )
        sd = table.std(axis=0, ddof=1) if len(per_run) > 1 else None
        return np.asarray(steps), table.mean(axis=0), sd


def group_series(runs: list) -> list[Series]:
    """Runs grouped into series (all settings but the seed equal), each series given a variant
    name and a line style when its method appears in several series of one dataset and net."""
    groups = defaultdict(list)
    for run in runs:
        settings = run.config.to_dict()
        settings.pop("seed")
        groups[repr(settings)].append(run)
    series = [Series(g) for g in groups.values()]
    siblings = defaultdict(list)
    for s in series:
        siblings[(s.dataset, s.net, s.method)].append(s)
    for group in siblings.values():
        if len(group) > 1:
            names = _variant_names(group)
            for i, s in enumerate(group):
                s.variant, s.style = names[i], i % len(LINESTYLES)
    return series


def _variant_names(group: list[Series]) -> list[str]:
    """A grid's ``variant=`` label of each series, else the settings in which they differ."""
    labels = [_grid_variant(s.runs[0].folder.path.name) for s in group]
    flat = [flat_settings(s.runs[0].config.to_dict()) for s in group]
    keys = sorted(k for k in flat[0] if not k.startswith(_NOT_A_VARIANT)
                  and len({repr(f.get(k)) for f in flat}) > 1)  # fmt: skip
    keyed = [", ".join(f"{k}={f[k]}" for k in keys) or f"#{i + 1}" for i, f in enumerate(flat)]
    return [label or other for label, other in zip(labels, keyed, strict=True)]


# settings that do not make a variant (its length, its evaluation, its bookkeeping)
_NOT_A_VARIANT = ("seed", "eval.", "train.blocks", "train.keep_checkpoints")


def _grid_variant(name: str) -> str:
    parts = [p.removeprefix("variant=") for p in name.split(",") if p.startswith("variant=")]
    return parts[0] if parts else ""


def subplots(rows: int, cols: int, **options):
    """A figure of ``rows x cols`` axes (always 2-d) laid out by constrained layout."""
    return plt.subplots(rows, cols, squeeze=False, layout="constrained", **options)


def draw(ax, steps, mean, sd, *, colour, marker, linestyle="-", label=None):
    """A mean line with markers and, with ``sd``, a band of one standard deviation."""
    ax.plot(steps, mean, color=colour, marker=marker, markersize=4, linestyle=linestyle,
            linewidth=1.4, label=label)  # fmt: skip
    if sd is not None:
        ax.fill_between(steps, mean - sd, mean + sd, color=colour, alpha=0.18, linewidth=0)


def step_axis(ax, high: float | None = None):
    """Training steps on an axis of whole ticks -- steps, or thousands of steps past 3,000 --
    at most about six of them (call after drawing: the ticks follow the data's range, or
    ``high``, the largest step of every panel that must share the unit)."""
    high = max(ax.dataLim.x1 if high is None else high, 1.0)
    unit = 1000 if high >= 3000 else 1
    base = next(b * unit * 10**k for k in range(8) for b in (1, 2, 5)
                if high / (b * unit * 10**k) <= 6)  # fmt: skip
    ax.xaxis.set_major_locator(MultipleLocator(base))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / unit:g}"))
    ax.set_xlabel("training steps" + (" (thousands)" if unit > 1 else ""))
    ax.set_xlim(left=-0.02 * high)  # a short run's points stay off the spine at 0


def legend_outside(fig, axes):
    """One legend for the figure, right of the axes, each label once."""
    handles = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=8,
                   frameon=False)  # fmt: skip


def caption(fig, text: str):
    """A caption line under the figure saying what is drawn."""
    fig.text(0.0, 0.0, text, ha="left", va="top", fontsize=7.5, wrap=True,
             transform=fig.transFigure)  # fmt: skip


def seeds_text(series: list[Series]) -> str:
    """The caption's seeds: one list when every series has the same seeds, else the series
    that differ named ("seeds 137, 138, 139 for LeNet-5 BMR-S&S, seed 137 for the others")."""

    def listed(seeds) -> str:
        return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"

    def named(s) -> str:
        variant = f" ({s.variant})" if s.variant else ""
        return f"{net_style(s.net)[0]} {method_style(s.method)[0]}{variant}"

    several = any(len(s.seeds) > 1 for s in series)
    # the seeds most series share are said once, for "the others", unless one series is left
    counts = Counter(tuple(s.seeds) for s in series)
    common = max(counts, key=lambda seeds: (counts[seeds], -len(seeds)))  # ties: fewer seeds
    rest = [s for s in series if tuple(s.seeds) == common]
    parts = [f"{listed(s.seeds)} for {named(s)}" for s in series if tuple(s.seeds) != common]
    if not parts:
        text = listed(common)
    else:
        whom = named(rest[0]) if len(rest) == 1 else "the others"
        text = ", ".join([*parts, f"{listed(common)} for {whom}"])
    return text + ("; lines: mean over seeds, bands: +-1 sd" if several else "")


def save(fig, out) -> list[Path]:
    """Renders ``fig`` as ``out.png`` and ``out.pdf``, then writes both atomically (an
    unwritable ``out`` raises :class:`OutputError` naming the file)."""
    out = Path(out)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    try:
        images = []
        for path in paths:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=path.suffix[1:], dpi=200, bbox_inches="tight")
            images.append(buffer.getvalue())
    finally:
        plt.close(fig)
    for path, image in zip(paths, images, strict=True):
        atomic_write(path, image)
    return paths
