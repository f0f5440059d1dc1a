"""The four paper figures render from run folders (hand-made fixture folders and a real run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmr_jax.cli import main
from bmr_jax.results.plots import PlotError, plot
from bmr_jax.runs.config import dump_config, from_dict
from bmr_jax.runs.folder import MARKER, RunFolder
from tests.runs import QUICKSTART
from tests.test_cli import UNWRITABLE, files_under, one_error_line, unwritable

SHAPES = {  # first two layers of each net, small stand-ins for the real matrices
    "mlp": {"hidden.0": (20, 785), "head": (10, 21)},
    "lenet5": {"convs.0": (6, 26), "head": (10, 7)},
}


def _fixture_run(root, dataset, net, method, seed=0):
    folder = RunFolder(root / dataset / f"{net}-{method}")
    folder.path.mkdir(parents=True)
    (folder.path / MARKER).write_text("bmr-jax run folder\n")
    config = from_dict({"method": method, "data": {"name": dataset}, "net": {"name": net}})
    folder.config_path.write_text(dump_config(config))
    rng = np.random.default_rng(seed)
    for block in (1, 2, 3):
        folder.append_metrics({
            "block": block, "step": 500 * block, "acc": 0.8 + 0.02 * block + 0.01 * seed,
            "ece": 0.05 / block,
            "nll": 0.6 - 0.05 * block, "pruned_fraction": 0.0 if method != "bmr_ss" else
            0.3 * (block - 1),
        })  # fmt: skip
    weights = {k: rng.normal(0, 0.1, s) for k, s in SHAPES[net].items()}
    masks = {k: rng.uniform(size=s) > 0.3 for k, s in SHAPES[net].items()}
    folder.save_posterior(weights, masks)
    return folder.path


@pytest.fixture
def fixture_runs(tmp_path):
    return [
        _fixture_run(tmp_path, "fashion_mnist", net, method, seed)
        for seed, (net, method) in enumerate(
            (n, m) for n in ("mlp", "lenet5") for m in ("flat_ff", "bmr_ss")
        )
    ]


@pytest.mark.parametrize("figure", [1, 2, 3, 4])
def test_every_figure_renders_as_png_and_pdf(figure, fixture_runs, tmp_path):
    out = tmp_path / "figures" / f"fig{figure}"
    paths = plot(fixture_runs, figure, out)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 5_000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _drawn(monkeypatch, runs, figure, out):
    """The matplotlib figure ``plot`` saves (its objects, not its file)."""
    import matplotlib.pyplot as plt

    captured, original = [], plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", keep)
    plot(runs, figure, out)
    return captured[0]


def _lines(ax):
    """``{label: (colour, ydata)}`` of the labelled lines of a panel."""
    from matplotlib.colors import to_hex

    return {ln.get_label(): (to_hex(ln.get_color()), list(ln.get_ydata()))
            for ln in ax.get_lines() if not ln.get_label().startswith("_")}  # fmt: skip


def test_figure_1_draws_every_metric_of_every_method_in_its_colour(fixture_runs, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    """Rows MLP then LeNet-5, columns ACC, ECE, NLL; in each panel Flat-FF and BMR-S&S in
    their colours, at the values the fixture wrote (ACC 0.8 + 0.02 block + 0.01 seed)."""
    from bmr_jax.results.figure_style import METHODS

    fig = _drawn(monkeypatch, fixture_runs, 1, tmp_path / "f1")
    axes = [ax for ax in fig.axes if ax.get_ylabel()]
    assert [ax.get_title(loc="left") for ax in axes] == ["MLP"] * 3 + ["LeNet-5"] * 3
    assert [ax.get_ylabel() for ax in axes[:3]] == ["test accuracy", "ECE", "NLL (nats per image)"]
    for ax in axes:
        lines = _lines(ax)
        assert sorted(lines) == ["BMR-S&S", "Flat-FF"]
        assert lines["BMR-S&S"][0] == METHODS["bmr_ss"][1]
        assert lines["Flat-FF"][0] == METHODS["flat_ff"][1]
    # the MLP's Flat-FF is seed 0, its BMR-S&S seed 1 (the fixture's order)
    np.testing.assert_allclose(_lines(axes[0])["Flat-FF"][1], [0.82, 0.84, 0.86])
    np.testing.assert_allclose(_lines(axes[0])["BMR-S&S"][1], [0.83, 0.85, 0.87])
    np.testing.assert_allclose(_lines(axes[2])["Flat-FF"][1], [0.55, 0.5, 0.45])


def test_figure_2_draws_the_pruned_fraction_of_each_net(fixture_runs, tmp_path, monkeypatch):
    fig = _drawn(monkeypatch, fixture_runs, 2, tmp_path / "f2")
    ax = fig.axes[0]
    assert ax.get_title() == "Fashion-MNIST" and ax.get_ylabel() == "pruned fraction of weights"
    lines = _lines(ax)
    assert lines["MLP"][1] == pytest.approx([0.0, 0.3, 0.6])  # BMR-S&S only
    assert lines["LeNet-5"][1] == pytest.approx([0.0, 0.3, 0.6])
    assert {"MLP: paper", "LeNet-5: paper"} <= set(lines)  # the paper's values beside them


def test_figure_2_panels_share_one_step_unit(fixture_runs, tmp_path, monkeypatch):
    """Issue 38: a panel of short runs was in steps and one of long runs in thousands."""
    long = _fixture_run(tmp_path, "cifar10", "lenet5", "bmr_ss")
    RunFolder(long).append_metrics({"block": 4, "step": 6000, "acc": 0.9, "ece": 0.01,
                                    "nll": 0.3, "pruned_fraction": 0.9})  # fmt: skip
    fig = _drawn(monkeypatch, [*fixture_runs, long], 2, tmp_path / "f2")
    labels = [ax.get_xlabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["training steps (thousands)"] * 2


def test_figure_2_shows_a_short_run_that_prunes_nothing(fixture_runs, tmp_path, monkeypatch):
    """Issue 38: a one-block, 600-step run at pruned fraction 0 sat on the corner of the
    axes, hidden by the spines: its point lies inside the panel's limits, off both axes."""
    short = RunFolder(tmp_path / "short" / "fashion_mnist" / "mlp-bmr_ss,train.blocks=1")
    short.path.mkdir(parents=True)
    (short.path / MARKER).write_text("bmr-jax run folder\n")
    config = from_dict({"method": "bmr_ss", "data": {"name": "fashion_mnist"},
                        "net": {"name": "mlp"}, "train": {"blocks": 1}})  # fmt: skip
    short.config_path.write_text(dump_config(config))
    short.append_metrics({"block": 1, "step": 600, "acc": 0.8, "ece": 0.05, "nll": 0.6,
                          "pruned_fraction": 0.0})  # fmt: skip
    fig = _drawn(monkeypatch, [*fixture_runs[:2], short.path], 2, tmp_path / "f2")
    ax = fig.axes[0]
    [line] = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [600]]
    assert line.get_marker() not in ("", "None") and list(line.get_ydata()) == [0.0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < 0 < 600 < x1 and y0 < 0 < y1


def _fixture_posterior(net, seed):
    """The weights and masks ``_fixture_run`` wrote, drawn again from the same seed."""
    rng = np.random.default_rng(seed)
    weights = {k: rng.normal(0, 0.1, s) for k, s in SHAPES[net].items()}
    masks = {k: rng.uniform(size=s) > 0.3 for k, s in SHAPES[net].items()}
    return weights, masks


FIXTURE_SEEDS = {("mlp", "flat_ff"): 0, ("mlp", "bmr_ss"): 1, ("lenet5", "flat_ff"): 2,
                 ("lenet5", "bmr_ss"): 3}  # fmt: skip


def test_figure_3_draws_each_layers_kept_weights_as_a_cdf(fixture_runs, tmp_path, monkeypatch):
    """A row per net (MLP, LeNet-5), a panel per layer in forward order, a line per method in
    its colour: x the sorted |w| of the kept non-zero weights, y = i / n."""
    from matplotlib.colors import to_hex

    from bmr_jax.results.figure_style import METHODS

    fig = _drawn(monkeypatch, fixture_runs, 3, tmp_path / "f3")
    panels = [ax for ax in fig.axes if ax.get_title()]
    titles = ["MLP: hidden.0", "MLP: head", "LeNet-5: convs.0", "LeNet-5: head"]
    assert [ax.get_title() for ax in panels] == titles
    for ax in panels:
        net = "mlp" if ax.get_title().startswith("MLP") else "lenet5"
        layer = ax.get_title().split(": ")[1]
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "|posterior median weight|"
        drawn = {ln.get_label(): ln for ln in ax.get_lines()}
        assert sorted(drawn) == ["BMR-S&S", "Flat-FF"]
        for method, name in (("flat_ff", "Flat-FF"), ("bmr_ss", "BMR-S&S")):
            weights, masks = _fixture_posterior(net, FIXTURE_SEEDS[net, method])
            kept = np.sort(np.abs(weights[layer][masks[layer]]))
            line = drawn[name]
            assert to_hex(line.get_color()) == METHODS[method][1]
            np.testing.assert_allclose(line.get_xdata(), kept)
            np.testing.assert_allclose(line.get_ydata(), np.arange(1, kept.size + 1) / kept.size)


def test_figure_4_shows_the_first_six_filters_of_each_run(fixture_runs, tmp_path, monkeypatch):
    """A row per run (nets, then methods, in the paper's order), labelled by both; six
    images: the first layer's first six units' incoming weights as a square (MLP 28 x 28,
    LeNet-5 5 x 5), on one symmetric colour scale per row."""
    fig = _drawn(monkeypatch, fixture_runs, 4, tmp_path / "f4")
    image_axes = [ax for ax in fig.axes if ax.images]
    rows = [("mlp", "flat_ff"), ("mlp", "bmr_ss"), ("lenet5", "flat_ff"), ("lenet5", "bmr_ss")]
    assert len(image_axes) == 6 * len(rows)
    labels = [ax.get_ylabel() for ax in image_axes[::6]]
    assert labels == ["MLP\nFlat-FF", "MLP\nBMR-S&S", "LeNet-5\nFlat-FF", "LeNet-5\nBMR-S&S"]
    for row, (net, method) in enumerate(rows):
        weights, _ = _fixture_posterior(net, FIXTURE_SEEDS[net, method])
        first = next(iter(weights.values()))[:, :-1]
        side = {"mlp": 28, "lenet5": 5}[net]
        limit = np.abs(first[:6]).max()
        for k, ax in enumerate(image_axes[6 * row : 6 * row + 6]):
            [image] = ax.images
            np.testing.assert_allclose(image.get_array(), first[k].reshape(side, side))
            assert image.get_clim() == pytest.approx((-limit, limit))


def test_plot_cli_and_errors(fixture_runs, tmp_path, capsys):
    assert main(["plot", *map(str, fixture_runs), "--figure", "2", "--out",
                 str(tmp_path / "f2")]) == 0  # fmt: skip
    assert capsys.readouterr().out.count("f2.") == 2
    other = _fixture_run(tmp_path, "cifar10", "mlp", "flat_ff")
    for figure in (1, 3, 4):  # issue 38: 3 and 4 drew two datasets' rows under one name
        with pytest.raises(PlotError, match=f"figure {figure} draws one dataset at a time"):
            plot([*fixture_runs, other], figure, tmp_path / f"f{figure}")
    assert main(["plot", str(tmp_path), "--figure", "1", "--out", str(tmp_path / "x")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    flat = [p for p in fixture_runs if "bmr_ss" not in p.name]
    with pytest.raises(PlotError, match="needs BMR-S&S runs"):
        plot(flat, 2, tmp_path / "f2b")


def test_figures_from_a_real_run(tmp_path):
    """A real (tiny) run folder written by `bmr-jax run` is enough for all four figures."""
    out = tmp_path / "run"
    assert main(["run", QUICKSTART, "net.name=lenet_300_100", "net.preset=small",
                 "train.blocks=2", "train.steps_per_block=30", "eval.samples=2", "--out",
                 str(out), "--quiet"]) == 0  # fmt: skip
    weights, masks = RunFolder(out).load_posterior()
    assert list(weights) == ["hidden.0", "hidden.1", "head"]
    assert weights["hidden.0"].shape == (100, 785) and masks["hidden.0"].dtype == bool
    summary = json.loads((out / "summary.json").read_text())
    for figure in (1, 2, 3, 4):
        assert plot([out], figure, tmp_path / f"real{figure}")
    assert summary["steps"] == 60


def test_methods_and_nets_follow_the_papers_order():
    from bmr_jax.results.records import METHOD_ORDER, NET_ORDER
    from bmr_jax.results.records import paper_rank as _rank

    methods = ["bmr_ss", "flat_map", "tiered_ff", "zzz_custom", "flat_ff"]
    assert sorted(methods, key=lambda m: _rank(m, METHOD_ORDER)) == [
        "flat_map", "flat_ff", "tiered_ff", "bmr_ss", "zzz_custom"
    ]  # fmt: skip
    assert sorted(["vit", "mlp", "mixer", "lenet5"], key=lambda n: _rank(n, NET_ORDER)) == [
        "mlp", "lenet5", "vit", "mixer"
    ]  # fmt: skip


def test_posterior_layers_come_in_forward_order(tmp_path):
    from bmr_jax.results.records import Run

    path = _fixture_run(tmp_path, "fashion_mnist", "mlp", "bmr_ss")
    folder = RunFolder(path)
    weights, masks = folder.load_posterior()
    folder.save_posterior(dict(sorted(weights.items())), masks)  # "head" first, as older runs
    assert list(RunFolder(path).load_posterior()[0]) == ["head", "hidden.0"]
    assert list(Run(path).posterior()[0]) == ["hidden.0", "head"]


@pytest.mark.parametrize("kind", UNWRITABLE)
def test_plot_into_an_unwritable_folder_exits_2(kind, fixture_runs, tmp_path, capsys):
    target, reasons = unwritable(tmp_path, kind, "fig.png")  # the first file plot writes
    before = files_under(tmp_path)
    args = ["plot", *map(str, fixture_runs), "--figure", "2", "--out", str(target.with_suffix(""))]
    assert main(args) == 2
    action = f"cannot create folder {target.parent}" if kind == "folder" else "cannot write"
    one_error_line(capsys.readouterr().err, target, reasons, action)
    assert files_under(tmp_path) == before


def test_plot_of_a_corrupt_metrics_file_exits_2(fixture_runs, tmp_path, capsys):
    metrics = fixture_runs[0] / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(lines[0] + lines[1][:20])  # cut off in the middle of block 2
    before = files_under(tmp_path)
    assert main(["plot", *map(str, fixture_runs), "--figure", "1", "--out",
                 str(tmp_path / "f1")]) == 2  # fmt: skip
    assert capsys.readouterr().err == (
        f"bmr-jax: error: {metrics}: line 2 is not valid JSON (Expecting value: column 21)\n"
    )
    assert files_under(tmp_path) == before


def test_plot_of_a_corrupt_posterior_exits_2(fixture_runs, tmp_path, capsys):
    posterior = fixture_runs[0] / "posterior.npz"
    posterior.write_bytes(posterior.read_bytes()[:1000])
    before = files_under(tmp_path)
    assert main(["plot", *map(str, fixture_runs), "--figure", "3", "--out",
                 str(tmp_path / "f3")]) == 2  # fmt: skip
    assert capsys.readouterr().err == f"bmr-jax: error: {posterior}: unreadable (BadZipFile)\n"
    assert files_under(tmp_path) == before


def test_the_caption_names_each_series_seeds_when_they_differ():
    from types import SimpleNamespace

    from bmr_jax.results import figure_style as style

    def run(net, seed):
        return SimpleNamespace(dataset="fashion_mnist", net=net, method="bmr_ss",
                               config=SimpleNamespace(seed=seed))  # fmt: skip

    lenet = style.Series([run("lenet5", s) for s in (139, 137, 138)])
    mlp, vit = style.Series([run("mlp", 137)]), style.Series([run("vit", 137)])
    band = "; lines: mean over seeds, bands: +-1 sd"
    assert style.seeds_text([lenet, mlp]) == (
        "seeds 137, 138, 139 for LeNet-5 BMR-S&S, seed 137 for MLP BMR-S&S" + band)
    assert style.seeds_text([mlp, lenet, vit]) == (
        "seeds 137, 138, 139 for LeNet-5 BMR-S&S, seed 137 for the others" + band)
    assert style.seeds_text([mlp, vit]) == "seed 137"
