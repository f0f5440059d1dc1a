"""What each ``bmr-jax`` subcommand does (the parser is in :mod:`bmr_jax.cli.parser`)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from urllib.parse import quote

from bmr_jax.errors import BmrJaxError, ConfigError


def _cmd_demo(args) -> int:
    import optax
    from flax import nnx

    from bmr_jax import data, nets
    from bmr_jax.inference import baseline
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
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.experiment import run_experiment
    from bmr_jax.runtime import enable_compilation_cache

    config = load_config(args.config, args.overrides)
    out = args.out or str(default_run_folder(args.config, args.overrides))
    if args.distributed:
        from bmr_jax.inference.parallel import initialize_distributed, process_run_folder

        initialize_distributed()
        out = process_run_folder(out)
    print(f"run folder: {out}", flush=True)
    enable_compilation_cache()
    summary = run_experiment(config, out, data_dir=args.data_dir, progress=not args.quiet,
                             force=args.force)  # fmt: skip
    print(
        f"{out}: acc {summary['acc']:.4f} nll {summary['nll']:.4f} ece {summary['ece']:.4f} "
        f"pruned {summary['pruned_fraction']:.3f} after {summary['steps']} steps"
    )
    return 0


def _cmd_grid(args) -> int:
    from bmr_jax.runs.grid import dry_run, outcome_table, read_grid, run_grid
    from bmr_jax.runtime import enable_compilation_cache

    grid = read_grid(args.grid, args.overrides, out=args.out)
    if args.dry_run:
        print(dry_run(grid.runs))
        return 0
    backend = _grid_backend(args, grid)
    if backend.name == "local":
        enable_compilation_cache()
    outcomes = run_grid(grid.runs, backend=backend, data_dir=args.data_dir,
                        progress=not args.quiet and backend.name == "local")  # fmt: skip
    print(outcome_table(outcomes))
    done = sum(o.status == "finished" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    failed = [o for o in outcomes if not o.ok]
    print(f"{args.grid}: {done} runs completed, {skipped} already finished"
          + (f", {len(failed)} not finished" if failed else ""))  # fmt: skip
    interrupted = [o for o in failed if o.status == "interrupted"]
    if interrupted and backend.name == "local":  # checkpointed: run the grid again to resume
        return interrupted[0].exit_code
    return 1 if failed else 0


def _grid_backend(args, grid):
    """The backend ``args`` ask for, with the grid's resources and the command line's."""
    import dataclasses

    from bmr_jax.runs.backends import LocalBackend, RayBackend, SlurmBackend

    if args.backend == "local":
        return LocalBackend()
    changes = {k: v for k, v in (("cpus_per_run", args.cpus_per_run),
                                 ("gpus_per_run", args.gpus_per_run)) if v is not None}  # fmt: skip
    slurm = dict(grid.resources.slurm)
    for item in args.slurm:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm {item!r}: expected KEY=VALUE")
        slurm[key] = _yaml_value(value)
    resources = dataclasses.replace(grid.resources, slurm=slurm, **changes)
    if args.backend == "ray":
        return RayBackend(args.address, resources)
    logs = Path(args.slurm_logs) if args.slurm_logs else grid.out / "submitit"
    backend = SlurmBackend(logs, resources, cluster=args.slurm_cluster)
    backend.executor()  # SLURM present and every --slurm key known, before any run starts
    return backend


def _yaml_value(text: str):
    import yaml

    from bmr_jax.runs.config_files import load_yaml

    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def _cmd_plot(args) -> int:
    from bmr_jax.results.plots import plot

    for path in plot(args.runs, args.figure, args.out):
        print(path)
    return 0


def _cmd_report(args) -> int:
    from bmr_jax.results.report import report

    print(report(args.runs, args.csv, args.records, frontier=args.frontier,
                 speedup=args.speedup), end="")
    if args.csv:
        print(f"per-block metrics: {args.csv}")
    if args.records:
        print(f"run records: {args.records}")
    return 0


def _cmd_bench_step(args) -> int:
    import json

    import jax

    from bmr_jax.runs.bench import bench_step, format_step_table
    from bmr_jax.runtime import enable_compilation_cache

    enable_compilation_cache()
    medians = bench_step(args.net, preset=args.preset, batch=args.batch, dataset=args.dataset,
                         rounds=args.rounds, data_dir=args.data_dir,
                         structured=args.structured)  # fmt: skip
    if args.json:
        print(json.dumps(medians))
    else:
        print(format_step_table(medians, f"{args.net} ({args.preset}) on {args.dataset}, batch "
                                f"{args.batch}, median of {args.rounds} rounds, "
                                f"{jax.devices()[0].device_kind}"))  # fmt: skip
    return 0


def _cmd_export(args) -> int:
    from bmr_jax import export

    if args.batch < 1:
        raise ConfigError(f"--batch: expected a positive integer, got {args.batch}")
    report = export.export_run(args.run, args.out, posterior=args.posterior,
                               file_format=args.format, sparse=args.sparse, batch=args.batch,
                               data_dir=args.data_dir)  # fmt: skip
    for line in report.lines():
        print(line)
    print(f"exported to {args.out}")
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
