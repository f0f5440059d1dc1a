"""The structured frontier (issue 36) from hand-made run folders: each point's speed-ups are
the dense latency over the exported network's, averaged over seeds by hand; the table; and the
figure through the CLI, read back through matplotlib's objects (labels, legend, positions)."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest

from bmr_jax.cli import main
from bmr_jax.results import figure_style
from bmr_jax.results.records import Run
from bmr_jax.results.speedup import SPEEDUP_FILE, speed_points, speedup_table
from bmr_jax.runs.config import dump_config, from_dict
from bmr_jax.runs.folder import MARKER, RunFolder

NET = {"data": {"name": "mnist"}, "net": {"name": "lenet5_caffe"}}
RUNS = [  # (folder, config, acc, dense / shrunk latency at 1000 and at 1 (ms), flops, units)
    ("lenet5_caffe-bmr_group,seed=137", {"method": "bmr_group", "seed": 137}, 0.990,
     (100.0, 40.0), (0.4, 0.2), (4000, 1000), "20-13-82"),
    ("lenet5_caffe-bmr_group,seed=138", {"method": "bmr_group", "seed": 138}, 0.988,
     (100.0, 25.0), (0.4, 0.4), (4000, 800), "20-12-70"),
    ("lenet5_caffe-l1_filters-50,seed=137", {"method": "l1_filters", "seed": 137}, 0.989,
     (90.0, 60.0), (0.3, 0.3), (4000, 1300), "10-25-250"),
]  # fmt: skip


def _variant(latency, flops):
    return {"latency_1000": latency[0] / 1e3, "latency_1": latency[1] / 1e3, "flops": flops}


@pytest.fixture
def run_paths(tmp_path):
    paths = []
    for name, values, acc, at_1000, at_1, flops, units in RUNS:
        folder = RunFolder(tmp_path / "mnist_structured" / name)
        folder.path.mkdir(parents=True)
        (folder.path / MARKER).write_text("bmr-jax run folder\n")
        folder.config_path.write_text(dump_config(from_dict({**NET, **values})))
        folder.append_metrics({"block": 1, "step": 600, "acc": acc, "nll": 0.04, "ece": 0.01})
        measured = {"units": units, "variants": {
            "dense": _variant((at_1000[0], at_1[0]), flops[0]),
            "shrunk": _variant((at_1000[1], at_1[1]), flops[1])}}  # fmt: skip
        (folder.path / SPEEDUP_FILE).write_text(json.dumps(measured))
        paths.append(folder.path)
    return paths


def test_points_are_dense_over_exported_latency_averaged_over_seeds(run_paths):
    found = {p.name: p for p in speed_points([Run(path) for path in run_paths])}
    group = found["lenet5_caffe-bmr_group"]
    assert group.seeds == (137, 138) and group.units == "20-13-82" and group.split == "test"
    # speed-ups 2.5 and 4.0 at batch 1000, 2.0 and 1.0 at batch 1; FLOPs 4 and 5
    assert group.speedup_1000 == pytest.approx((3.25, 1.5 / 2**0.5))
    assert group.speedup_1 == pytest.approx((1.5, 1.0 / 2**0.5))
    assert group.flops == pytest.approx((4.5, 1.0 / 2**0.5))
    assert group.error == pytest.approx((1.1, 0.2 / 2**0.5))
    table = speedup_table(list(found.values()))
    assert "| LeNet-5-Caffe | Group BMR | lenet5_caffe-bmr_group | 137, 138 | 20-13-82 | " \
        "4.50x +- 0.71 | 1.50x +- 0.71 | 3.25x +- 1.06 | test | 1.100 +- 0.141 |" in table
    assert table.index("l1_filters") < table.index("bmr_group")  # 1.5x before 3.25x


def test_a_run_without_a_measurement_is_left_out(run_paths):
    (run_paths[2] / SPEEDUP_FILE).unlink()
    assert [p.name for p in speed_points([Run(path) for path in run_paths])] == [
        "lenet5_caffe-bmr_group"]


def test_the_figure_draws_each_method_at_its_speedup(run_paths, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figure_style, "save", lambda fig, out: drawn.append(fig) or [])
    assert main(["plot", *map(str, run_paths), "--figure", "speedup",
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    (fig,) = drawn
    axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in axes] == ["measured speed-up, batch 1000",
                                               "measured speed-up, batch 1", "FLOP reduction"]
    assert all(ax.get_ylabel() == "test error (%)" for ax in axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == ["Group BMR", "L1 filters", "SBP, published (its own CPU)"]
    colours = {figure_style.METHODS[m][1] for m in ("bmr_group", "l1_filters")}
    points = {}
    for line in axes[0].get_lines():
        x, y = line.get_data()
        if len(x) == 1 and line.get_linestyle() == "None":
            points[(round(float(x[0]), 6), round(float(y[0]), 6))] = line.get_color()
    assert points[(3.25, 1.1)] == figure_style.METHODS["bmr_group"][1]  # mean of 2.5x and 4x
    assert points[(1.5, 1.1)] == figure_style.METHODS["l1_filters"][1]  # 90 / 60 ms
    assert (5.4, 0.86) in points and set(points.values()) - colours == {"black"}
    plt.close(fig)
