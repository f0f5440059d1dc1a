"""Grids of experiments: a list of configs times a product of overrides, run one after another.

A grid file (YAML; paths relative to it)::

    name: fig1_fashion_mnist_cpu          # default: the file name
    configs:                              # config files or glob patterns
      - ../configs/fashion_mnist/*.yaml
    product:                              # optional: key -> values, one run per combination
      seed: [137, 138]
    overrides: [net.preset=small, train.blocks=10]   # applied to every run
    variants:                             # optional: name -> overrides, one run per variant
      ours: []
      paper_init: [guide.init=paper]
    out: ../runs/fig1_fashion_mnist_cpu   # default: runs/<name>; bmr-jax grid --out overrides
    resources:                            # optional: what each run asks of a cluster
      cpus_per_run: 4                     # (bmr_jax.runs.backends.Resources)
      gpus_per_run: 1
      slurm: {timeout_min: 720, slurm_partition: gpu}

Every run goes to ``out/<config folder>/<config name>[,variant=name][,key=value...]`` (e.g.
``runs/reference/fashion_mnist/mlp-bmr_ss``), so grids that share an ``out`` share runs.
Finished runs are skipped and unfinished ones resume from their checkpoint, so rerunning a
grid continues it. All configs are validated before the first run starts. The runs go one
after another in this process, or to Ray or SLURM (:mod:`bmr_jax.runs.backends`); a failing run
does not stop the others, and the end is one table of every run's state and final metrics.
"""

from __future__ import annotations

import glob
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from bmr_jax.runs.backends import LocalBackend, Resources
from bmr_jax.runs.config import Config, ConfigError, load_config
from bmr_jax.runs.config_files import load_yaml
from bmr_jax.runs.folder import RunFolder
from bmr_jax.runs.member import Outcome, member_state

_KEYS = {"name", "configs", "product", "variants", "overrides", "out", "resources"}


@dataclass(frozen=True)
class GridRun:
    name: str
    config: Config
    out: Path


class Grid(NamedTuple):
    """A grid file read: its runs, its output folder and what each run asks of a cluster."""

    runs: list[GridRun]
    out: Path
    resources: Resources


def load_grid(path: str | Path, extra_overrides: list[str] = (), out: str | Path | None = None
              ) -> list[GridRun]:  # fmt: skip
    """The runs of grid file ``path``, each config validated (:class:`ConfigError` if not);
    ``out`` replaces the grid's output folder."""
    return read_grid(path, extra_overrides, out).runs


def read_grid(path: str | Path, extra_overrides: list[str] = (), out: str | Path | None = None
              ) -> Grid:  # fmt: skip
    """:func:`load_grid` with the grid's output folder and ``resources``."""
    path = Path(path)
    try:
        spec = load_yaml(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read grid ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a grid must be a mapping of keys")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown grid key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_KEYS))}"
        )
    name = spec.get("name", path.stem)
    if out is not None:
        out = Path(out)
    else:
        out = (path.parent / spec["out"]) if "out" in spec else Path("runs") / name
    patterns = spec.get("configs") or []
    if isinstance(patterns, str):
        patterns = [patterns]
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(Path(m) for m in glob.glob(str(path.parent / pattern)))
        if not matches:
            raise ConfigError(f"{path}: configs pattern {pattern!r} matches no file")
        files.extend(matches)
    if not files:
        raise ConfigError(f"{path}: configs: the grid lists no config")
    product = spec.get("product") or {}
    if not isinstance(product, dict) or not all(isinstance(v, list) for v in product.values()):
        raise ConfigError(f"{path}: product must map keys to lists of values")
    empty = [key for key, values in product.items() if not values]
    if empty:  # the product would have no run, and the grid would "finish" having run none
        raise ConfigError(f"{path}: product: {empty[0]} has no values")
    overrides = [*(spec.get("overrides") or []), *extra_overrides]
    variants = _variants(path, spec.get("variants"))
    runs = []
    keys = list(product)
    for file in files:
        for variant, changes in variants.items():
            label = [] if variant is None else [f"variant={variant}"]
            for values in itertools.product(*(product[k] for k in keys)):
                point = [f"{k}={_yaml_scalar(v)}" for k, v in zip(keys, values, strict=True)]
                run_name = ",".join([f"{file.parent.name}/{file.stem}", *label, *point])
                config = load_config(file, [*overrides, *changes, *point])
                runs.append(GridRun(run_name, config, out / run_name))
    return Grid(runs, out, _resources(path, spec.get("resources")))


def _resources(path: Path, spec) -> Resources:
    if spec is None:
        return Resources()
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: resources must be a mapping (cpus_per_run, gpus_per_run, "
                          "slurm)")  # fmt: skip
    unknown = set(spec) - {"cpus_per_run", "gpus_per_run", "slurm"}
    if unknown:
        raise ConfigError(f"{path}: unknown resources key {sorted(unknown)[0]!r}; allowed: "
                          "cpus_per_run, gpus_per_run, slurm")  # fmt: skip
    return Resources(**spec)


def _variants(path: Path, spec) -> dict:
    """``{name: [override, ...]}`` of a grid's ``variants`` (``{None: []}`` without any)."""
    if spec is None:
        return {None: []}
    if (
        not isinstance(spec, dict)
        or not spec
        or not all(
            isinstance(v, list) and all(isinstance(o, str) for o in v) for v in spec.values()
        )
    ):
        raise ConfigError(f"{path}: variants must map names to lists of key=value overrides")
    bad = [name for name in spec if not str(name).replace("_", "").isalnum()]
    if bad:
        raise ConfigError(f"{path}: variant name {bad[0]!r}: use letters, digits and _")
    return {str(name): list(changes) for name, changes in spec.items()}


def _yaml_scalar(value) -> str:
    """``value`` as it would be written in an override (``137``, ``small``, ``null``)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def dry_run(runs: list[GridRun]) -> str:
    """One line per run: its name, run folder and state (``done``, ``partial at block k/N``,
    ``new``); nothing is run."""
    width = max((len(r.name) for r in runs), default=0)
    states = [member_state(r.out) for r in runs]
    lines = [f"{r.name:<{width}}  {state.describe(r.config.train.blocks):<34}  {r.out}"
             for r, state in zip(runs, states, strict=True)]  # fmt: skip
    done = sum(state.kind == "done" for state in states)
    return "\n".join([*lines, f"{len(runs)} runs: {done} done, {len(runs) - done} to run"])


def run_grid(runs: list[GridRun], *, backend=None, data_dir=None, progress: bool = True,
             log=print, on_event=None) -> list[Outcome]:  # fmt: skip
    """Runs every unfinished run on ``backend`` (default: :class:`LocalBackend`, one after
    another here); returns every run's :class:`~bmr_jax.runs.member.Outcome` in grid order
    (``skipped`` for the runs finished before). ``on_event`` maps run names to
    :func:`bmr_jax.runs.experiment.run_experiment`'s test hook."""
    backend = backend or LocalBackend()
    outcomes, todo = {}, []
    for i, run in enumerate(runs, 1):
        if member_state(run.out).kind == "done":
            log(f"[{i}/{len(runs)}] {run.name}: finished, skipped")
            outcomes[run.name] = Outcome(run.name, "skipped", RunFolder(run.out).read_summary())
        else:
            log(f"[{i}/{len(runs)}] {run.name} -> {run.out}")
            todo.append(run)
    for outcome in backend.run(todo, data_dir=data_dir, progress=progress, log=log,
                               on_event=on_event):  # fmt: skip
        outcomes[outcome.name] = outcome
        if not outcome.ok:
            log(f"{outcome.name}: {outcome.status}: {outcome.error}")
    return [outcomes.get(r.name, Outcome(r.name, "not run")) for r in runs]  # after a signal


def outcome_table(outcomes: list[Outcome]) -> str:
    """A Markdown table of every run's state and final test metrics."""
    lines = ["| run | state | acc | nll | ece | pruned |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        s = o.summary or {}
        cells = [f"{s[k]:.4f}" if isinstance(s.get(k), float) else "-"
                 for k in ("acc", "nll", "ece")]  # fmt: skip
        pruned = f"{s['pruned_fraction']:.3f}" if s.get("pruned_fraction") is not None else "-"
        state = f"{o.status}: {o.error}" if o.error else o.status
        lines.append(f"| {o.name} | {state} | {' | '.join(cells)} | {pruned} |")
    return "\n".join(lines)
