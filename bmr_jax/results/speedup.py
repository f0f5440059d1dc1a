"""The structured frontier (issue 36): test metrics against the *measured* speed-up of the
exported network, drawn and tabulated from run folders.

``scripts/bench_export.py RUN ... --record`` times each finished run's exported network side by
side with its dense network in one process (batch 1 and 1000, medians over rounds) and writes
the measurement into the run folder as :data:`SPEEDUP_FILE`; everything here reads those files
and the runs' final records. A point is one config over its seeds (folders that differ only in
their ``seed=`` part): mean and sample standard deviation of the error (1 - ACC, %), NLL, ECE,
the speed-ups (dense latency / exported latency), the FLOP reduction and the kept units.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bmr_jax.results import figure_style as style
from bmr_jax.results.frontier import mean_sd, seed_counts

SPEEDUP_FILE = "speedup.json"
# Neklyudov et al. 2017 (Structured Bayesian Pruning), table 2: test error (%), measured CPU
# speed-up of LeNet-5-Caffe and LeNet-fc 784-500-300 (REFERENCE_RESULTS.md B)
PUBLISHED_SBP = {"lenet5_caffe": (0.86, 5.4), "lenet_300_100": (1.55, 2.3)}
PANELS = (("speedup_1000", "measured speed-up, batch 1000"),
          ("speedup_1", "measured speed-up, batch 1"),
          ("flops", "FLOP reduction"))  # fmt: skip


class SpeedPoint(NamedTuple):
    """One point: ``(mean, sd)`` over its seeds of every quantity (sd 0 for one seed)."""

    name: str
    method: str
    net: str
    seeds: tuple[int, ...]
    error: tuple[float, float]
    nll: tuple[float, float]
    ece: tuple[float, float]
    speedup_1000: tuple[float, float]
    speedup_1: tuple[float, float]
    flops: tuple[float, float]
    units: str  # the exported network's layer widths, e.g. "20-13-82" (the first seed's)
    split: str  # "test", or "validation" for runs that held out data.validation images


def read_speedup(folder) -> dict | None:
    """The measurement ``scripts/bench_export.py --record`` wrote into ``folder``, or None."""
    path = Path(folder) / SPEEDUP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _ratios(measured: dict) -> dict:
    dense, shrunk = measured["variants"]["dense"], measured["variants"]["shrunk"]
    return {"speedup_1000": dense["latency_1000"] / shrunk["latency_1000"],
            "speedup_1": dense["latency_1"] / shrunk["latency_1"],
            "flops": dense["flops"] / shrunk["flops"]}  # fmt: skip


def speed_points(runs) -> list[SpeedPoint]:
    """The points of ``runs`` (``bmr_jax.results.plots.Run``) that have a final evaluated record
    and a speed-up measurement."""
    groups = defaultdict(list)
    for run in runs:
        final = [r for r in run.metrics if r.get("acc") is not None]
        measured = read_speedup(run.folder.path)
        if final and measured is not None:
            name = re.sub(r",?seed=\d+", "", Path(run.folder.path).name)
            groups[(run.net, name)].append((run, final[-1], measured))
    out = []
    for (net, name), members in sorted(groups.items()):
        records = [record for _, record, _ in members]
        ratios = [_ratios(measured) for _, _, measured in members]
        out.append(SpeedPoint(
            name, members[0][0].method, net,
            tuple(sorted(run.config.seed for run, _, _ in members)),
            mean_sd([100 * (1 - r["acc"]) for r in records]),
            mean_sd([r["nll"] for r in records]), mean_sd([r["ece"] for r in records]),
            *(mean_sd([r[k] for r in ratios]) for k, _ in PANELS),
            members[0][2].get("units", ""),
            "validation" if members[0][0].config.data.validation else "test",
        ))  # fmt: skip
    return out


def speedup_table(points: list[SpeedPoint]) -> str:
    """A markdown table of every point, by network and speed-up at batch 1000."""
    lines = ["| net | method | point | seeds | units kept | FLOP reduction | speed-up b=1 | "
             "speed-up b=1000 | split | error % | NLL | ECE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in sorted(points, key=lambda p: (p.net, p.speedup_1000[0])):
        cells = [f"{p.flops[0]:.2f}x +- {p.flops[1]:.2f}",
                 f"{p.speedup_1[0]:.2f}x +- {p.speedup_1[1]:.2f}",
                 f"{p.speedup_1000[0]:.2f}x +- {p.speedup_1000[1]:.2f}", p.split,
                 *(f"{m:.3f} +- {s:.3f}" for m, s in (p.error, p.nll, p.ece))]  # fmt: skip
        lines.append(f"| {style.net_style(p.net)[0]} | {style.method_style(p.method)[0]} | "
                     f"{p.name} | {', '.join(map(str, p.seeds))} | {p.units} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _speed_axis(ax, values) -> None:
    """A log axis from just below the smallest to just above the largest of ``values`` (1x
    among them), ticks at 1, 2, 5 x 10^k, or at every digit on a narrow range."""
    ax.set_xscale("log")
    low, high = min(values) / 1.15, max(values) * 1.25
    ax.set_xlim(low, high)
    narrow = high / low < 4  # within a factor 4: a tick at every digit (0.7x, 0.8x, ...)
    ax.xaxis.set_major_locator(LogLocator(subs=tuple(range(1, 10)) if narrow else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def figure_speedup(runs, out) -> list[Path]:
    """Test error against the measured speed-up at batch 1000 and batch 1 and against the
    FLOP reduction, a row per network (``out.png``/``.pdf``)."""
    from bmr_jax.results.records import PlotError

    points = speed_points(runs)
    if not points:
        raise PlotError(f"the speed-up figure needs finished runs with a {SPEEDUP_FILE} "
                        "(scripts/bench_export.py RUN --record)")  # fmt: skip
    nets = sorted({p.net for p in points})
    fig, axes = style.subplots(len(nets), len(PANELS), figsize=(11, 3.0 * len(nets)))
    for row, net in enumerate(nets):
        mine = [p for p in points if p.net == net]
        for col, (key, xlabel) in enumerate(PANELS):
            ax = axes[row, col]
            for method in sorted({p.method for p in mine}):
                name, colour, marker = style.method_style(method)
                members = [p for p in mine if p.method == method]
                ax.errorbar([getattr(p, key)[0] for p in members], [p.error[0] for p in members],
                            xerr=[getattr(p, key)[1] for p in members],
                            yerr=[p.error[1] for p in members], color=colour, marker=marker,
                            linestyle="none", capsize=2, label=name)  # fmt: skip
            if key == "speedup_1000" and net in PUBLISHED_SBP:
                error, speed = PUBLISHED_SBP[net]
                ax.plot(speed, error, marker="*", mfc="none", markersize=10, color="black",
                        linestyle="none", label="SBP, published (its own CPU)")  # fmt: skip
            published = [PUBLISHED_SBP[net][1]] if key == "speedup_1000" and net in PUBLISHED_SBP \
                else []  # fmt: skip
            extents = [getattr(p, key)[0] + sign * getattr(p, key)[1] for p in mine
                       for sign in (-1, 1)]  # the error bars' ends  # fmt: skip
            _speed_axis(ax, [v for v in extents if v > 0] + [1.0] + published)
            split = "/".join(sorted({p.split for p in mine}))
            ax.set(xlabel=xlabel, ylabel=f"{split} error (%)", title=style.net_style(net)[0])
            ax.grid(alpha=0.3, which="both")
    style.legend_outside(fig, axes)
    splits = " and ".join(sorted({p.split for p in points}))
    style.caption(fig, f"MNIST {splits} error of the final network against the measured CPU "
                  "speed-up of its exported (smaller, dense) network over the dense one, timed "
                  "side by side in one process, and against its FLOP reduction; markers: mean "
                  f"over {seed_counts(points)}, bars: +-1 sd; star: SBP as "
                  "published (Neklyudov et al. 2017; another CPU).")  # fmt: skip
    return style.save(fig, out)
