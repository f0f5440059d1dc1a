"""The frontier (issue 14) from hand-made run folders: each point's mean and sd over seeds
against values computed by hand, the family names, the table, and the figure through the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from bmr_jax.cli import main
from bmr_jax.results.frontier import frontier_table, points
from bmr_jax.results.records import Run
from bmr_jax.runs.config import dump_config, from_dict
from bmr_jax.runs.folder import MARKER, RunFolder

NET = {"data": {"name": "mnist"}, "net": {"name": "lenet_300_100"}}
TARGET = {"rule": "target", "rule_options": {"schedule": {"final": 0.99, "end": 3}}}
RUNS = [  # (folder name, config, final acc, nll, ece, compression)
    ("lenet_300_100-sparse_vd,seed=137", {"method": "sparse_vd", "seed": 137}, 0.980, 0.060,
     0.010, 60.0),
    ("lenet_300_100-sparse_vd,seed=138", {"method": "sparse_vd", "seed": 138}, 0.982, 0.064,
     0.014, 70.0),
    ("lenet_300_100-bmr_target-100x,seed=137", {"method": "bmr_ss", "bmr": TARGET, "seed": 137},
     0.975, 0.080, 0.005, 90.0),
    ("lenet_300_100-bmr_ss-all,seed=137", {"method": "bmr_ss", "bmr": {"inclusion_rate": "all"},
     "seed": 137}, 0.960, 0.140, 0.008, 200.0),
    ("lenet_300_100-gmp-10x,seed=137", {"method": "gmp", "seed": 137}, 0.985, 0.070, 0.020,
     10.0),
    ("lenet_300_100-bmr_target-100x,bmr.prune_classifier=true,seed=137",
     {"method": "bmr_ss", "bmr": {**TARGET, "prune_classifier": True}, "seed": 137}, 0.978,
     0.075, 0.004, 110.0),
]  # fmt: skip


@pytest.fixture
def run_paths(tmp_path):
    paths = []
    for name, values, acc, nll, ece, compression in RUNS:
        folder = RunFolder(tmp_path / "mnist_frontier" / name)
        folder.path.mkdir(parents=True)
        (folder.path / MARKER).write_text("bmr-jax run folder\n")
        folder.config_path.write_text(dump_config(from_dict({**NET, **values})))
        folder.append_metrics({"block": 1, "step": 600, "acc": 0.5, "nll": 2.0, "ece": 0.3,
                               "pruned_fraction": 0.0, "compression": 1.0})  # fmt: skip
        folder.append_metrics({"block": 2, "step": 1200, "acc": None, "nll": None, "ece": None,
                               "pruned_fraction": 0.5, "compression": 3.0})  # not evaluated
        # the final records, older than the counts' names: ``compression`` is the alive count,
        # and the masks keep twice the entries still alive (half the compression by mask)
        folder.append_metrics({"block": 3, "step": 1800, "acc": acc, "nll": nll, "ece": ece,
                               "pruned_fraction": 1 - 2 / compression,
                               "compression": compression})  # fmt: skip
        paths.append(folder.path)
    return paths


def test_points_average_the_seeds(run_paths):
    frontier = {p.name: p for p in points([Run(path) for path in run_paths])}
    assert sorted(frontier) == ["lenet_300_100-bmr_ss-all", "lenet_300_100-bmr_target-100x",
                                "lenet_300_100-bmr_target-100x,bmr.prune_classifier=true",
                                "lenet_300_100-gmp-10x", "lenet_300_100-sparse_vd"]  # fmt: skip
    vd = frontier["lenet_300_100-sparse_vd"]
    assert vd.seeds == (137, 138) and vd.label == "Sparse VD"
    # error 2.0 % and 1.8 %: mean 1.9, sample sd 0.2 / sqrt(2); compression 65 +- 10 / sqrt(2)
    assert vd.error == pytest.approx((1.9, 0.2 / 2**0.5))
    assert vd.compression_alive == pytest.approx((65.0, 10.0 / 2**0.5))
    assert vd.compression_by_mask == pytest.approx((32.5, 5.0 / 2**0.5))
    assert vd.nll == pytest.approx((0.062, 0.004 / 2**0.5))
    assert frontier["lenet_300_100-bmr_target-100x"].label == "BMR, target"
    classifier = frontier["lenet_300_100-bmr_target-100x,bmr.prune_classifier=true"]
    assert (classifier.family, classifier.label) == ("bmr_target_classifier",
                                                     "BMR, target, classifier pruned")
    assert classifier.error == pytest.approx((2.2, 0.0)) and classifier.seeds == (137,)
    assert frontier["lenet_300_100-bmr_ss-all"].label == "BMR-S&S (all)"
    assert frontier["lenet_300_100-bmr_ss-all"].error == pytest.approx((4.0, 0.0))
    assert frontier["lenet_300_100-gmp-10x"].label == "GMP"


def test_the_table_lists_every_point_by_compression(run_paths):
    table = frontier_table(points([Run(path) for path in run_paths]))
    rows = table.splitlines()[2:]
    assert [row.split(" | ")[2] for row in rows] == [
        "lenet_300_100-gmp-10x", "lenet_300_100-sparse_vd", "lenet_300_100-bmr_target-100x",
        "lenet_300_100-bmr_target-100x,bmr.prune_classifier=true",
        "lenet_300_100-bmr_ss-all"]  # fmt: skip
    assert "| 65.0x +- 7.1 | 32.5x +- 3.5 | 1.900 +- 0.141 |" in rows[1]


def test_the_frontier_table_prints_from_the_cli(run_paths, capsys):
    assert main(["report", *map(str, run_paths), "--frontier"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("| net | method | point | seeds |") and len(rows) == 2 + 5
    assert "lenet_300_100-sparse_vd | 137, 138 | 65.0x +- 7.1 | 32.5x +- 3.5 | 1.900" in rows[3]


def test_the_frontier_figure_renders_from_the_cli(run_paths, tmp_path, capsys):
    out = tmp_path / "frontier"
    assert main(["plot", *map(str, run_paths), "--figure", "frontier", "--out", str(out)]) == 0
    for suffix in (".png", ".pdf"):
        assert (out.with_suffix(suffix)).stat().st_size > 5_000


def test_the_frontier_figure_draws_both_counts_of_every_point(run_paths, tmp_path):
    """Each point is filled at its alive count and hollow at its count by mask, joined by a
    dotted line, in its family's colour; Sparse VD's published point is a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from bmr_jax.results.frontier import FAMILIES, figure_frontier

    captured = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["fig"] = fig
        return original(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plt.Figure, "savefig", keep)
        figure_frontier([Run(path) for path in run_paths], tmp_path / "f")
    error_panel = captured["fig"].axes[0]
    assert error_panel.get_ylabel() == "test error (%)" and error_panel.get_xscale() == "log"
    colour = to_hex(FAMILIES["sparse_vd"][1])
    lines = [ln for ln in error_panel.get_lines() if to_hex(ln.get_color()) == colour]
    xs = sorted(float(x) for ln in lines for x in ln.get_xdata())
    # Sparse VD (65x alive, 32.5x by mask, error 1.9 %), the dotted join, the published star
    hollow = [ln for ln in lines if ln.get_marker() not in ("None", "*")
              and ln.get_markerfacecolor() == "none"]  # fmt: skip
    assert [list(ln.get_xdata()) for ln in hollow] == [[32.5]]
    assert [list(ln.get_ydata()) for ln in hollow] == [pytest.approx([1.9])]
    dotted = [ln for ln in lines if ln.get_linestyle() == ":"]
    assert [sorted(ln.get_xdata()) for ln in dotted] == [[32.5, 65.0]]
    assert 68.0 in xs  # Molchanov et al.'s published 68x


def test_an_unknown_figure_is_one_error_line(run_paths, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(run_paths[0]), "--figure", "front", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "unknown figure 'front'" in capsys.readouterr().err


def test_the_caption_counts_the_seeds_of_each_point(run_paths):
    from bmr_jax.results.frontier import seed_counts

    assert seed_counts(points([Run(path) for path in run_paths])) == \
        "1-2 seeds per point (137, 138)"  # fmt: skip


def test_only_a_point_that_would_squash_the_panel_is_left_off_scale():
    from bmr_jax.results.frontier import off_scale

    # quartiles 1.0 and 1.5 (numpy's linear interpolation over 9 values): fence 1.5 + 3 * 0.5 = 3.0
    errors = [0.9, 1.0, 1.0, 1.1, 1.2, 1.3, 1.5, 2.0, 7.3]
    assert off_scale(errors).tolist() == [False] * 8 + [True]
    # 0.025 is beyond its fence (quartiles 0.00275 and 0.007625: 0.0223) but would not squash
    # the others (0.025 - 0.002 < 4 * (0.017 - 0.002)): kept in scale
    eces = [0.002, 0.002, 0.003, 0.004, 0.0045, 0.0045, 0.017, 0.025]
    assert not off_scale(eces).any()
    assert not off_scale([1.0, 1.0, 1.0]).any()


def test_an_off_scale_points_bar_does_not_stretch_the_panel():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bmr_jax.results.frontier import Point, _mark_off_scale, off_scale

    def point(error, sd):
        return Point("p", "bmr_ss", "BMR-S&S (layer)", "lenet5_caffe", (137, 138),
                     (error, sd), (0.1, 0.0), (0.01, 0.0), (100.0, 0.0),
                     (100.0, 0.0))  # fmt: skip

    kept = [point(e, 0.1) for e in (0.9, 1.0, 1.0, 1.1, 1.2, 1.3, 1.5, 2.0)]
    collapsed = point(48.0, 57.5)  # one seed at 7 %, one at chance: the bar reaches -9.5
    fig, ax = plt.subplots()
    ax.errorbar([100.0] * 9, [p.error[0] for p in [*kept, collapsed]],
                yerr=[p.error[1] for p in [*kept, collapsed]])  # fmt: skip
    far = off_scale([p.error[0] for p in [*kept, collapsed]])
    assert far.tolist() == [False] * 8 + [True]
    _mark_off_scale(ax, [*kept, collapsed], "error", far, also_in_scale=(0.75,))
    # in scale: bars from 0.8 to 2.1 and the published 0.75, a span of 1.35; 5 % below, 12 % above
    np.testing.assert_allclose(ax.get_ylim(), (0.75 - 0.0675, 2.1 + 0.162), rtol=1e-9)
    assert [t.get_text() for t in ax.texts] == ["48\u2191"]
    plt.close(fig)
