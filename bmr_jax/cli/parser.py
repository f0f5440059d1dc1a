"""The ``bmr-jax`` argument parser: one function per subcommand."""

from __future__ import annotations

import argparse

from bmr_jax.cli import commands


def _existing_folder(text: str) -> str:
    """A folder that exists (a mistyped --data-dir is not a place to download into)."""
    from pathlib import Path

    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text}: the data folder does not exist")
    return text


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=_existing_folder,
        default=None,
        help="data folder laid out like shared/data (default: $BMR_JAX_DATA or the user cache)",
    )


def _positive_int(text: str) -> int:
    """An integer >= 1 (steps, batch sizes, classes, image sides)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_demo(sub) -> None:

    demo = sub.add_parser("demo", help="train a network briefly on the embedded default data")
    demo.add_argument("--dataset", default="mnist_mini")
    demo.add_argument("--net", default="lenet5")
    demo.add_argument("--preset", default="paper", choices=("paper", "small"))
    demo.add_argument("--steps", type=_positive_int, default=1000)
    demo.add_argument("--batch-size", type=_positive_int, default=128)
    demo.add_argument("--lr", type=_positive_float, default=1e-3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_dir(demo)
    demo.set_defaults(func=commands._cmd_demo)


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run (or resume) an experiment config into a run folder")
    run.add_argument("config", help="YAML config file (see configs/)")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.blocks=5")
    run.add_argument("--out", default=None,
                     help="run folder (default: runs/<config path>[,key=value...])")  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--force", action="store_true",
                     help="clear a run folder that holds a run of a different config")  # fmt: skip
    run.add_argument("--distributed", action="store_true",
                     help="multi-host: jax.distributed.initialize() first")  # fmt: skip
    _add_data_dir(run)
    run.set_defaults(func=commands._cmd_run)


def _add_grid(sub) -> None:
    grid = sub.add_parser("grid", help="run a grid of experiments (skips finished runs)")
    grid.add_argument("grid", help="grid YAML file (see experiments/)")
    grid.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    grid.add_argument("--quiet", action="store_true", help="no progress bars")
    grid.add_argument("--out", help="output folder of the runs (default: the grid's out)")
    grid.add_argument("--dry-run", action="store_true",
                      help="list the runs, their folders and states (done, partial, new); run "
                           "nothing")  # fmt: skip
    grid.add_argument("--backend", default="local", choices=("local", "ray", "slurm"),
                      help="where the runs go: one after another here (default), Ray tasks, "
                           "or SLURM jobs through submitit (pip install 'bmr-jax[cluster]')")
    grid.add_argument("--address", help="ray: join this cluster (default: start a local one)")
    grid.add_argument("--cpus-per-run", type=int, help="ray/slurm: CPU cores per run "
                      "(default: the grid's resources, else 1)")  # fmt: skip
    grid.add_argument("--gpus-per-run", type=float, help="ray/slurm: GPUs per run (ray: may be "
                      "a fraction; default: the grid's resources, else 0)")  # fmt: skip
    grid.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                      help="slurm: a submitit parameter (timeout_min=720, "
                           "slurm_partition=gpu, ...); repeatable")  # fmt: skip
    grid.add_argument("--slurm-logs", help="slurm: folder of the job logs (default: "
                      "<out>/submitit)")  # fmt: skip
    grid.add_argument("--slurm-cluster", default="slurm", choices=("slurm", "local"),
                      help="slurm: local runs the jobs on this machine through submitit's "
                           "local executor (to try a setup)")  # fmt: skip
    _add_data_dir(grid)
    grid.set_defaults(func=commands._cmd_grid)


def _figure(text: str) -> int | str:
    if text in ("frontier", "speedup") or text in ("1", "2", "3", "4"):
        return text if text in ("frontier", "speedup") else int(text)
    raise argparse.ArgumentTypeError(f"unknown figure {text!r}; allowed: 1, 2, 3, 4, frontier, "
                                     "speedup")  # fmt: skip


def _add_plot(sub) -> None:
    plot_parser = sub.add_parser("plot", help="draw one of the paper's figures from run folders")
    plot_parser.add_argument("runs", nargs="+", help="run folders")
    plot_parser.add_argument("--figure", type=_figure, required=True,
                             help="1-4 (the paper's), frontier (issue 14) or speedup (issue "
                                  "36: needs scripts/bench_export.py --record)")  # fmt: skip
    plot_parser.add_argument("--out", required=True, help="output file (.png and .pdf)")
    plot_parser.set_defaults(func=commands._cmd_plot)


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (side by side in one process)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    step = bench_sub.add_parser("step", help="every method's step and the reduce vs an Adam step")
    step.add_argument("--net", default="lenet5", help="network name (default lenet5)")
    step.add_argument("--preset", default="paper", choices=("paper", "small"))
    step.add_argument("--batch", type=int, default=120)
    step.add_argument("--dataset", default="fashion_mnist")
    step.add_argument("--rounds", type=int, default=100, help="timed rounds (median)")
    step.add_argument("--json", action="store_true", help="print one JSON object (seconds)")
    step.add_argument("--structured", action="store_true",
                      help="the structured methods too (bmr_multipliers, bmrs, bmr_units and "
                           "the group and multiplier reduce steps)")  # fmt: skip
    _add_data_dir(step)
    step.set_defaults(func=commands._cmd_bench_step)


def _add_report(sub) -> None:
    report_parser = sub.add_parser("report", help="tabulate run folders (Markdown; CSV per block)")
    report_parser.add_argument("runs", nargs="+", help="run folders")
    report_parser.add_argument("--csv", help="also write every run's per-block metrics here")
    report_parser.add_argument("--records", metavar="DIR",
                               help="also copy each run's config, metrics and summary (no "
                                    "checkpoints) to DIR/<dataset>/<run>")  # fmt: skip
    report_parser.add_argument("--frontier", action="store_true",
                               help="tabulate the accuracy-compression frontier instead: one "
                                    "row per point (runs that differ only in their seed), "
                                    "mean +- sd over its seeds")  # fmt: skip
    report_parser.add_argument("--speedup", action="store_true",
                               help="tabulate the structured frontier instead: units kept, "
                                    "FLOP reduction and measured speed-up of the exported "
                                    "network (scripts/bench_export.py --record) per point")
    report_parser.set_defaults(func=commands._cmd_report)


def _add_export(sub) -> None:
    export = sub.add_parser("export", help="write a finished run's network without its unused "
                            "units (safetensors + architecture.json)")  # fmt: skip
    export.add_argument("run", help="a finished run folder")
    export.add_argument("--out", required=True, help="export folder")
    export.add_argument("--posterior", action="store_true",
                        help="also the standard deviation of every kept weight (mean-field)")
    export.add_argument("--format", default="safetensors", choices=("safetensors", "npz"))
    export.add_argument("--sparse", default="never", choices=("auto", "never", "always"),
                        help="sparse compute of dense layers: never (the default: the same run "
                        "gives the same files), always, or auto (timed on this machine)")
    export.add_argument("--batch", type=int, default=1000,
                        help="batch size at which auto measures dense against sparse")
    _add_data_dir(export)
    export.set_defaults(func=commands._cmd_export)


def _add_datasets(sub) -> None:
    datasets = sub.add_parser("datasets", help="list, download or verify datasets")
    datasets.add_argument(
        "action", choices=("list", "download", "verify"), nargs="?", default="list"
    )
    datasets.add_argument("names", nargs="*",
                          help="dataset names (verify: default all; a missing file fails "
                          "only a named dataset)")  # fmt: skip
    _add_data_dir(datasets)
    datasets.set_defaults(func=commands._cmd_datasets)


def _add_nets(sub) -> None:
    nets_parser = sub.add_parser("nets", help="list the model zoo with parameter counts")
    nets_parser.add_argument(
        "--input-shape", type=_positive_int, nargs=3, default=(28, 28, 1),
        metavar=("H", "W", "C")
    )
    nets_parser.add_argument("--classes", type=_positive_int, default=10)
    nets_parser.set_defaults(func=commands._cmd_nets)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2 (``bmr-jax run: error: ...``),
    as every other bad input of the CLI; ``--help`` still shows the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="bmr-jax",
        description="Bayesian sparsification of deep networks with Bayesian model reduction.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_run, _add_grid, _add_plot, _add_bench, _add_report,
                _add_export, _add_datasets, _add_nets):  # fmt: skip
        add(sub)
    return parser
