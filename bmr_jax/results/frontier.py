"""The accuracy-compression frontier (issue 14), drawn and tabulated from run folders only.

Each frontier point is one config run with several seeds. Its runs are the folders whose
names differ only in their ``seed=`` part. For a point, the final record gives the test
error (1 - ACC, in %), the NLL, the ECE and two compressions (``bmr_jax.bmr.reduce``): *alive*,
all entries over those still alive, the weights of dead units counted as zero (what the export
of a sequential network realises: it removes dead units), and *by mask*, all entries over those
the masks keep (no dead-unit credit, as the Sparse VD paper counts). Each value is a mean and a
sample standard deviation over the seeds.

Methods are named as :func:`point_family` reads them from the config:

- BMR-S&S, with its inclusion-rate counting;
- BMR with a target (the ``target`` rule);
- Sparse VD;
- GMP;
- IVON + BMR, with the spike-and-slab rule or a target;

each with ", classifier pruned" where its rule may prune the classifier too
(``bmr.prune_classifier``), a family of its own.

The figure has one panel per metric against log compression, one colour per family, and
error bars of one sd on both axes. A point is drawn filled at its alive count, and hollow at
its count by mask, the two joined by a dotted line (they coincide where no unit died). Each
network's published Sparse VD point (Molchanov et al. 2017, table 1) is an open star.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.ticker import FuncFormatter

from bmr_jax.bmr.reduce import record_compressions
from bmr_jax.results import figure_style as style

# Molchanov, Ashukha & Vetrov 2017, table 1: (test error %, compression) of Sparse VD
PUBLISHED_SPARSE_VD = {"lenet_300_100": (1.92, 68.0), "lenet5_caffe": (0.75, 280.0)}
FAMILIES = {  # family -> (name, colour, marker); BMR-S&S keeps figure_style's red
    "bmr_ss": ("BMR-S&S", style.METHODS["bmr_ss"][1], "D"),
    "bmr_target": ("BMR, target", "#e377c2", "p"),
    "sparse_vd": style.METHODS["sparse_vd"],
    "gmp": style.METHODS["gmp"],
    "ivon_bmr": style.METHODS["ivon_bmr"],
    "ivon_target": ("IVON + BMR, target", "#17becf", "*"),
    "bmr_target_classifier": ("BMR, target, classifier pruned", "#7b2d5f", "p"),
    "gmp_classifier": ("GMP, classifier pruned", "#303030", "h"),
}
CURVES = ("bmr_target", "ivon_target", "gmp")  # families with several targets, and their
# "_classifier" variants (point_family)
COUNTING_MARKERS = {"BMR-S&S (layer)": "^", "BMR-S&S (alive)": "s", "BMR-S&S (all)": "D"}
METRICS = (("error", "test error (%)"), ("nll", "test NLL (nats)"), ("ece", "test ECE"))


class Point(NamedTuple):
    """One frontier point: ``(mean, sd)`` of each metric over its seeds (sd 0 for one)."""

    name: str  # the point's folder name without the seed
    family: str
    label: str
    net: str
    seeds: tuple[int, ...]
    error: tuple[float, float]
    nll: tuple[float, float]
    ece: tuple[float, float]
    compression_alive: tuple[float, float]
    compression_by_mask: tuple[float, float]


def point_family(config) -> tuple[str, str]:
    """``(family, label)`` of a run's config, e.g. ``("bmr_ss", "BMR-S&S (all)")``, or
    ``("bmr_target_classifier", "BMR, target, classifier pruned")`` under
    ``bmr.prune_classifier``."""
    family, label = _method_family(config)
    if config.bmr.prune_classifier:
        return f"{family}_classifier", f"{label}, classifier pruned"
    return family, label


def _method_family(config) -> tuple[str, str]:
    if config.method == "bmr_ss" and config.bmr.rule == "target":
        return "bmr_target", "BMR, target"
    if config.method == "ivon_bmr" and config.bmr.rule == "target":
        return "ivon_target", FAMILIES["ivon_target"][0]
    if config.method == "bmr_ss":
        return "bmr_ss", f"BMR-S&S ({config.bmr.inclusion_rate})"
    if config.method in FAMILIES:
        return config.method, FAMILIES[config.method][0]
    return config.method, style.method_style(config.method)[0]


def mean_sd(values) -> tuple[float, float]:
    """``(mean, sample sd)`` of ``values`` (sd 0 for a single value)."""
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def points(runs) -> list[Point]:
    """The frontier points of ``runs`` (``bmr_jax.results.plots.Run``), each from the final
    evaluated record of every seed; runs with no evaluated record are left out."""
    groups = defaultdict(list)
    for run in runs:
        final = [r for r in run.metrics if r.get("acc") is not None]
        if final:
            name = re.sub(r",?seed=\d+", "", Path(run.folder.path).name)
            groups[(run.net, name)].append((run, final[-1]))
    out = []
    for (net, name), members in sorted(groups.items()):
        family, label = point_family(members[0][0].config)
        records = [record for _, record in members]
        counts = [record_compressions(r) for r in records]
        out.append(Point(
            name, family, label, net, tuple(sorted(run.config.seed for run, _ in members)),
            mean_sd([100 * (1 - r["acc"]) for r in records]),
            mean_sd([r["nll"] for r in records]), mean_sd([r["ece"] for r in records]),
            mean_sd([c["compression_alive"] for c in counts]),
            mean_sd([c["compression_by_mask"] for c in counts]),
        ))  # fmt: skip
    return out


def frontier_table(frontier: list[Point]) -> str:
    """A markdown table of every point, by network and compression alive."""
    lines = ["| net | method | point | seeds | compression alive | compression by mask "
             "| error % | NLL | ECE |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in sorted(frontier, key=lambda p: (p.net, p.compression_alive[0])):
        cells = [f"{m:.1f}x +- {s:.1f}" for m, s in (p.compression_alive, p.compression_by_mask)]
        cells += [f"{m:.3f} +- {s:.3f}" for m, s in (p.error, p.nll, p.ece)]
        seeds = ", ".join(map(str, p.seeds))
        lines.append(f"| {style.net_style(p.net)[0]} | {p.label} | {p.name} | {seeds} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def seed_counts(frontier: list[Point]) -> str:
    """How many seeds the points have, and which: "3 seeds per point (137, 138, 139)" or
    "1-3 seeds per point (137, 138, 139)"."""
    counts = sorted({len(p.seeds) for p in frontier})
    seeds = sorted({s for p in frontier for s in p.seeds})
    span = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else f"{counts[0]}"
    plural = "seed" if counts == [1] else "seeds"
    return f"{span} {plural} per point ({', '.join(map(str, seeds))})"


def _draw_family(ax, members, key, family, label):
    name, colour, marker = FAMILIES.get(family, (label, "#000000", "x"))
    marker = COUNTING_MARKERS.get(label, marker)  # BMR-S&S's countings: one marker each
    members = sorted(members, key=lambda p: p.compression_alive[0])
    x = [p.compression_alive[0] for p in members]
    y = [getattr(p, key)[0] for p in members]
    joined = family.removesuffix("_classifier") in CURVES  # several targets: a curve
    ax.errorbar(x, y, xerr=[p.compression_alive[1] for p in members],
                yerr=[getattr(p, key)[1] for p in members], color=colour, marker=marker,
                markersize=5, capsize=2, linewidth=1.2, linestyle="-" if joined else "none",
                label=label)  # fmt: skip
    by_mask = [p.compression_by_mask[0] for p in members]
    ax.plot(by_mask, y, color=colour, marker=marker, mfc="none", markersize=5,
            linestyle="none")  # the same points by mask: hollow
    for alive, masked, value in zip(x, by_mask, y, strict=True):
        ax.plot([masked, alive], [value, value], color=colour, linestyle=":", linewidth=0.8)


def off_scale(values) -> np.ndarray:
    """Which of a panel's values to leave above its range: those beyond Tukey's far-out
    fence, Q3 + 3 IQR (Tukey 1977), but only when they would take more than three quarters
    of the range (an over-pruned point, BMR-S&S ``layer`` at 7 % error, would squash the
    others into its bottom fifth); else none."""
    values = np.asarray(values, float)
    q1, q3 = np.percentile(values, [25, 75])
    far = values > q3 + 3 * (q3 - q1)
    if not far.any() or far.all():
        return np.zeros_like(far)
    kept = values[~far]
    squashed = values.max() - values.min() > 4 * (kept.max() - values.min())
    return far if squashed else np.zeros_like(far)


def _mark_off_scale(ax, members, key, far, also_in_scale=()):
    """Fits the panel's y range to its in-scale points, their error bars and
    ``also_in_scale`` (a published value), 5 % below and 12 % above, and writes the value of
    each point ``far`` leaves off the scale (``off_scale``) at the top edge, in its family's
    colour, with an arrow. An off-scale point's own bar (a collapsed seed beside a working
    one: 7 % and 89 %) does not stretch the range."""
    if not any(far):
        return
    kept = [getattr(p, key) for p, f in zip(members, far, strict=True) if not f]
    lows = [mean - sd for mean, sd in kept] + list(also_in_scale)
    tops = [mean + sd for mean, sd in kept] + list(also_in_scale)
    span = max(tops) - min(lows)
    ax.set_ylim(min(lows) - 0.05 * span, max(tops) + 0.12 * span)
    for p in (p for p, f in zip(members, far, strict=True) if f):
        ax.annotate(f"{getattr(p, key)[0]:.3g}\u2191", xy=(p.compression_alive[0], 1),
                    xycoords=("data", "axes fraction"), xytext=(0, -2),
                    textcoords="offset points", ha="center", va="top", fontsize=7,
                    color=FAMILIES.get(p.family, (None, "#000000"))[1])  # fmt: skip


def figure_frontier(runs, out) -> list[Path]:
    """Error, NLL and ECE against compression, a row per network (``out.png``/``.pdf``)."""
    from bmr_jax.results.records import PlotError

    frontier = points(runs)
    if not frontier:
        raise PlotError("the frontier needs finished runs with test metrics")
    nets = sorted({p.net for p in frontier})
    fig, axes = style.subplots(len(nets), 3, figsize=(11, 3.0 * len(nets)))
    for row, net in enumerate(nets):
        mine = [p for p in frontier if p.net == net]
        labels = sorted({(p.family, p.label) for p in mine})
        compressions = [c for p in mine for c in (p.compression_alive[0],
                                                  p.compression_by_mask[0])]
        compression_range = (min(compressions) / 1.25, max(compressions) * 1.25)
        for col, (key, ylabel) in enumerate(METRICS):
            ax = axes[row, col]
            far = off_scale([getattr(p, key)[0] for p in mine])
            shown = [p for p, f in zip(mine, far, strict=True) if not f]  # the rest: an arrow
            for family, label in labels:
                members = [p for p in shown if (p.family, p.label) == (family, label)]
                if members:
                    _draw_family(ax, members, key, family, label)
            published = ()
            if key == "error" and net in PUBLISHED_SPARSE_VD:
                error, compression = PUBLISHED_SPARSE_VD[net]
                published = (error,)
                ax.plot(compression, error, marker="*", mfc="none", markersize=10,
                        color=FAMILIES["sparse_vd"][1], linestyle="none",
                        label="Sparse VD, published")  # fmt: skip
            _mark_off_scale(ax, mine, key, far, also_in_scale=published)
            ax.set_xscale("log")
            ax.set_xlim(*compression_range)  # every panel of a row: its off-scale points too
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
            ax.set(xlabel="compression (all / kept weights)", ylabel=ylabel,
                   title=style.net_style(net)[0])  # fmt: skip
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].plot([], [], color="#606060", marker="o", mfc="none", linestyle=":",
                    label="hollow: the same point by mask")  # the legend's key to the counts
    style.legend_outside(fig, axes)
    seeds = seed_counts(frontier)
    style.caption(fig, "MNIST test set: error, NLL and ECE of the final network against its "
                  "compression, filled: alive (weights of dead units counted as zero, as the "
                  "export removes them), hollow: by mask (no dead-unit credit, the Sparse VD "
                  "paper counts); every method of a "
                  f"network at the same step budget; markers: mean over {seeds}, bars: +-1 sd "
                  "(points with several seeds); star: Sparse VD as published (Molchanov et "
                  "al. 2017); a value with an arrow: a point above the panel's range.")  # fmt: skip
    return style.save(fig, out)
