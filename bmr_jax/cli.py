"""The ``bmr-jax`` command line.

    bmr-jax run CONFIG [k=v ...]      run or resume an experiment into a run folder
    bmr-jax grid GRID [k=v ...]       run a grid of experiments, skipping finished runs
    bmr-jax plot RUNS... --figure N --out FILE   draw figure N (1-4) of the paper
    bmr-jax bench step --net NAME     each method's step and the BMR reduce vs an Adam step
    bmr-jax report RUNS... [--csv F]  final metrics as a Markdown table; per-block CSV
    bmr-jax demo                      train a LeNet-5 on the embedded mnist_mini, print accuracy
    bmr-jax datasets list             registered datasets and whether their files are present
    bmr-jax datasets download NAME    download (and verify) a dataset's files
    bmr-jax datasets verify [NAME..]  check dataset files against their published MD5s
    bmr-jax nets                      the model zoo with presets and parameter counts

Errors caused by the input (unknown names, missing or corrupt files, an output file that
cannot be written) exit with status 2 and one line on stderr naming the problem. A run stopped
by SIGINT/SIGTERM checkpoints and exits with 130/143 (run it again to resume); a run whose
numerics fail (NaN/inf) exits with 3.

``run`` without ``--out`` writes to ``runs/<config path>[,key=value...]`` (one folder per set of
overrides) and prints the run folder first. ``datasets verify NAME...`` exits with 2 when a
named dataset has a missing or corrupt file; ``datasets verify`` (every registered dataset)
lists missing files without failing (most users never download every dataset) but exits with 2
on a corrupt one. Both end with a one-line count.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from urllib.parse import quote

from bmr_jax.errors import BmrJaxError


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data folder laid out like shared/data (default: $BMR_JAX_DATA or the user cache)",
    )


def _cmd_demo(args) -> int:
    import optax
    from flax import nnx

    from bmr_jax import baseline, data, nets
    from bmr_jax.runtime import enable_compilation_cache

    enable_compilation_cache()
    spec = nets.get_net_spec(args.net)
    dataset = data.load(args.dataset, image_size=spec.image_size, data_dir=args.data_dir)
    net = nets.create_net(
        args.net, dataset.num_classes, dataset.image_shape, args.preset, rngs=nnx.Rngs(args.seed)
    )
    print(
        f"{args.net} ({args.preset}, {nets.count_params(net):,} parameters) on {dataset.name}: "
        f"{len(dataset.train):,} train / {len(dataset.test):,} test images {dataset.image_shape}"
    )
    print(f"training with Adam (lr {args.lr}) for {args.steps} steps of batch {args.batch_size}")
    result = baseline.fit(
        net,
        dataset.train,
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=optax.adam(args.lr),
        seed=args.seed,
        progress=not args.quiet,
    )
    start = time.perf_counter()
    acc = baseline.accuracy(net, dataset.test)
    print(
        f"final training loss {result.losses[-10:].mean():.4f}; "
        f"{result.seconds:.1f} s ({result.steps_per_second:.0f} steps/s after compilation)"
    )
    print(
        f"test accuracy: {acc:.4f} on {len(dataset.test):,} images "
        f"(evaluated in {time.perf_counter() - start:.2f} s)"
    )
    return 0


# characters an override keeps in a run folder's name; any other is %-escaped ("/" -> "%2F")
_NAME_SAFE = "=+@"


def default_run_folder(config_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """``runs/`` + the config's path below a ``configs`` folder, without ``.yaml``
    (``configs/fashion_mnist/mlp-bmr_ss.yaml`` -> ``runs/fashion_mnist/mlp-bmr_ss``), or
    ``runs/<file name>`` for a config elsewhere; then ``,key=value`` per override in the given
    order, as grid runs are named (``runs/quickstart,seed=138,train.blocks=3``). Characters
    other than letters, digits, ``._-~=+@`` are %-escaped, so different overrides never share
    a folder; a name too long for the file system is shortened and ends in a hash of it."""
    path = Path(config_path).resolve().with_suffix("")
    parts = path.parts
    below = parts[len(parts) - parts[::-1].index("configs") :] if "configs" in parts else ()
    *folders, name = below or (path.name,)
    name = ",".join([name, *(quote(o, safe=_NAME_SAFE) for o in overrides)])
    if len(name.encode()) > 200:  # file names are at most 255 bytes
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name.encode()[:160].decode(errors='ignore')}...{digest}"
    return Path("runs", *folders, name)


def _cmd_run(args) -> int:
    from bmr_jax.config import load_config
    from bmr_jax.experiment import run_experiment
    from bmr_jax.runtime import enable_compilation_cache

    config = load_config(args.config, args.overrides)
    out = args.out or str(default_run_folder(args.config, args.overrides))
    print(f"run folder: {out}", flush=True)
    if args.distributed:
        from bmr_jax.parallel import initialize_distributed

        initialize_distributed()
    enable_compilation_cache()
    summary = run_experiment(config, out, data_dir=args.data_dir, progress=not args.quiet,
                             force=args.force)  # fmt: skip
    print(
        f"{out}: acc {summary['acc']:.4f} nll {summary['nll']:.4f} ece {summary['ece']:.4f} "
        f"pruned {summary['pruned_fraction']:.3f} after {summary['steps']} steps"
    )
    return 0


def _cmd_grid(args) -> int:
    from bmr_jax.grid import load_grid, run_grid
    from bmr_jax.runtime import enable_compilation_cache

    runs = load_grid(args.grid, args.overrides)
    enable_compilation_cache()
    counts = run_grid(runs, data_dir=args.data_dir, progress=not args.quiet)
    print(f"{args.grid}: {counts['finished']} runs completed, {counts['skipped']} already finished")
    return 0


def _cmd_plot(args) -> int:
    from bmr_jax.plots import plot

    for path in plot(args.runs, args.figure, args.out):
        print(path)
    return 0


def _cmd_report(args) -> int:
    from bmr_jax.report import report

    print(report(args.runs, args.csv), end="")
    if args.csv:
        print(f"per-block metrics: {args.csv}")
    return 0


def _cmd_bench_step(args) -> int:
    import json

    import jax

    from bmr_jax.bench import bench_step, format_step_table
    from bmr_jax.runtime import enable_compilation_cache

    enable_compilation_cache()
    medians = bench_step(args.net, preset=args.preset, batch=args.batch, dataset=args.dataset,
                         rounds=args.rounds, data_dir=args.data_dir)  # fmt: skip
    if args.json:
        print(json.dumps(medians))
    else:
        print(format_step_table(medians, f"{args.net} ({args.preset}) on {args.dataset}, batch "
                                f"{args.batch}, median of {args.rounds} rounds, "
                                f"{jax.devices()[0].device_kind}"))  # fmt: skip
    return 0


def _cmd_datasets(args) -> int:
    from bmr_jax import data

    if args.action == "list":
        for name in data.list_datasets():
            spec = data.get_dataset_spec(name)
            folder = spec.folder(args.data_dir)
            present = sum((folder / f.name).is_file() for f in spec.files)
            print(f"{name:14s} {present}/{len(spec.files)} files in {folder}  {spec.description}")
        return 0
    if args.action == "download":
        if not args.names:
            raise BmrJaxError("datasets download needs at least one dataset name")
        for name in args.names:
            paths = data.fetch_dataset_files(name, args.data_dir)  # honours BMR_JAX_OFFLINE
            folder = data.get_dataset_spec(name).folder(args.data_dir)
            print(f"{name}: {len(paths)} files verified in {folder}")
        return 0
    return _verify_datasets(args.names, args.data_dir)


def _verify_datasets(names: list[str], data_dir) -> int:
    """``datasets verify``: one line per file and a count; raises :class:`BmrJaxError` for a
    corrupt file, and for a missing file of a dataset named in ``names``."""
    from bmr_jax import data

    specs = [data.get_dataset_spec(name) for name in names or data.list_datasets()]
    counts = {"verified": 0, "corrupt": 0, "missing": 0}
    failed: dict[str, list[str]] = {"corrupt": [], "missing": []}
    for spec in specs:
        folder = spec.folder(data_dir)
        for f in spec.files:
            state = _verify_file(folder / f.name, f.md5)
            counts[state] += 1
            if state in failed and spec.name not in failed[state]:
                failed[state].append(spec.name)
    print("files: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    problems = [f"corrupt files in {', '.join(failed['corrupt'])}"] if failed["corrupt"] else []
    if names and failed["missing"]:
        missing = ", ".join(failed["missing"])
        problems.append(f"missing files in {missing} (bmr-jax datasets download {missing})")
    if problems:
        raise BmrJaxError(f"datasets verify: {'; '.join(problems)}")
    return 0


def _verify_file(path: Path, md5: str) -> str:
    """Prints and returns the state of one dataset file: verified, corrupt or missing."""
    from bmr_jax.data.files import verify_file

    if not path.is_file():
        print(f"missing  {path}")
        return "missing"
    try:
        verify_file(path, md5)
    except BmrJaxError as e:
        print(f"CORRUPT  {e}")
        return "corrupt"
    except OSError as e:
        print(f"CORRUPT  {path}: cannot read ({e.strerror or type(e).__name__})")
        return "corrupt"
    print(f"ok       {path}")
    return "verified"


def _cmd_nets(args) -> int:
    from flax import nnx

    from bmr_jax import nets

    shape = tuple(args.input_shape)
    for name in nets.list_nets():
        spec = nets.get_net_spec(name)
        size = spec.image_size
        net_shape = shape if size is None else (size, size, shape[2])
        for preset, doc in spec.presets.items():
            net = nnx.eval_shape(
                lambda name=name, shape=net_shape, preset=preset: nets.create_net(
                    name, args.classes, shape, preset, rngs=nnx.Rngs(0)
                )
            )
            print(f"{name:14s} {preset:6s} {nets.count_params(net):>10,}  {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmr-jax",
        description="Bayesian sparsification of deep networks with Bayesian model reduction.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a network briefly on the embedded default data")
    demo.add_argument("--dataset", default="mnist_mini")
    demo.add_argument("--net", default="lenet5")
    demo.add_argument("--preset", default="paper", choices=("paper", "small"))
    demo.add_argument("--steps", type=int, default=1000)
    demo.add_argument("--batch-size", type=int, default=128)
    demo.add_argument("--lr", type=float, default=1e-3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_dir(demo)
    demo.set_defaults(func=_cmd_demo)

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
    run.set_defaults(func=_cmd_run)

    grid = sub.add_parser("grid", help="run a grid of experiments (skips finished runs)")
    grid.add_argument("grid", help="grid YAML file (see experiments/)")
    grid.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    grid.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_dir(grid)
    grid.set_defaults(func=_cmd_grid)

    plot_parser = sub.add_parser("plot", help="draw one of the paper's figures from run folders")
    plot_parser.add_argument("runs", nargs="+", help="run folders")
    plot_parser.add_argument("--figure", type=int, required=True, choices=(1, 2, 3, 4))
    plot_parser.add_argument("--out", required=True, help="output file (.png and .pdf)")
    plot_parser.set_defaults(func=_cmd_plot)

    bench = sub.add_parser("bench", help="benchmarks (side by side in one process)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    step = bench_sub.add_parser("step", help="every method's step and the reduce vs an Adam step")
    step.add_argument("--net", default="lenet5", help="network name (default lenet5)")
    step.add_argument("--preset", default="paper", choices=("paper", "small"))
    step.add_argument("--batch", type=int, default=120)
    step.add_argument("--dataset", default="fashion_mnist")
    step.add_argument("--rounds", type=int, default=100, help="timed rounds (median)")
    step.add_argument("--json", action="store_true", help="print one JSON object (seconds)")
    _add_data_dir(step)
    step.set_defaults(func=_cmd_bench_step)

    report_parser = sub.add_parser("report", help="tabulate run folders (Markdown; CSV per block)")
    report_parser.add_argument("runs", nargs="+", help="run folders")
    report_parser.add_argument("--csv", help="also write every run's per-block metrics here")
    report_parser.set_defaults(func=_cmd_report)

    datasets = sub.add_parser("datasets", help="list, download or verify datasets")
    datasets.add_argument(
        "action", choices=("list", "download", "verify"), nargs="?", default="list"
    )
    datasets.add_argument("names", nargs="*",
                          help="dataset names (verify: default all; a missing file fails "
                          "only a named dataset)")  # fmt: skip
    _add_data_dir(datasets)
    datasets.set_defaults(func=_cmd_datasets)

    nets_parser = sub.add_parser("nets", help="list the model zoo with parameter counts")
    nets_parser.add_argument(
        "--input-shape", type=int, nargs=3, default=(28, 28, 1), metavar=("H", "W", "C")
    )
    nets_parser.add_argument("--classes", type=int, default=10)
    nets_parser.set_defaults(func=_cmd_nets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `run` takes key=value overrides anywhere after the config, also after its options
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if extra != overrides or (overrides and args.command not in ("run", "grid")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    from bmr_jax.experiment import RunInterrupted
    from bmr_jax.methods import NonFiniteError

    try:
        return args.func(args)
    except RunInterrupted as e:  # checkpointed: 128 + the signal, as a shell reports it
        print(f"bmr-jax: {e}", file=sys.stderr)
        return e.exit_code
    except NonFiniteError as e:  # the numerics failed, not the input
        print(f"bmr-jax: error: {e}", file=sys.stderr)
        return 3
    except BmrJaxError as e:
        print(f"bmr-jax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # last resort: a file operation not yet turned into a BmrJaxError
        print(f"bmr-jax: error: {_os_error_line(e)}", file=sys.stderr)
        return 2


def _os_error_line(e: OSError) -> str:
    """``<filename>: <reason>`` of ``e`` on one line."""
    reason = e.strerror or str(e) or type(e).__name__
    line = f"{e.filename}: {reason}" if e.filename is not None else reason
    return line.replace("\r", "\\r").replace("\n", "\\n")


if __name__ == "__main__":
    sys.exit(main())
