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

Every run goes to ``out/<config folder>/<config name>[,variant=name][,key=value...]`` (e.g.
``runs/reference/fashion_mnist/mlp-bmr_ss``), so grids that share an ``out`` share runs.
Finished runs are skipped and unfinished ones resume from their checkpoint, so rerunning a
grid continues it. All configs are validated before the first run starts.
"""

from __future__ import annotations

import glob
import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

from bmr_jax.runs.config import Config, ConfigError, load_config
from bmr_jax.runs.folder import RunFolder

_KEYS = {"name", "configs", "product", "variants", "overrides", "out"}


@dataclass(frozen=True)
class GridRun:
    name: str
    config: Config
    out: Path


def load_grid(path: str | Path, extra_overrides: list[str] = (), out: str | Path | None = None
              ) -> list[GridRun]:  # fmt: skip
    """The runs of grid file ``path``, each config validated (:class:`ConfigError` if not);
    ``out`` replaces the grid's output folder."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
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
    return runs


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


def run_grid(runs: list[GridRun], *, data_dir=None, progress: bool = True, log=print) -> dict:
    """Runs every unfinished run; returns ``{"finished": n, "skipped": n}``."""
    from bmr_jax.runs.experiment import run_experiment

    counts = {"finished": 0, "skipped": 0}
    for i, run in enumerate(runs, 1):
        if RunFolder(run.out).is_finished():
            log(f"[{i}/{len(runs)}] {run.name}: finished, skipped")
            counts["skipped"] += 1
            continue
        log(f"[{i}/{len(runs)}] {run.name} -> {run.out}")
        run_experiment(run.config, run.out, data_dir=data_dir, progress=progress, log=log)
        counts["finished"] += 1
    return counts
