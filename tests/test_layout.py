"""The package layout is the data flow: data -> nets -> Bayesian model -> inference -> BMR ->
methods -> runs -> export -> cli, and no module imports from a layer above its own (imports inside
functions included). Modules stay short enough to read at once."""

from __future__ import annotations

import ast
from pathlib import Path

import bmr_jax

PACKAGE = Path(bmr_jax.__file__).parent
LAYERS = ["errors registry runtime validate", "data", "nets", "bayes", "inference", "bmr",
          "methods", "runs", "export", "cli"]  # fmt: skip
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names.split()}


def _layer(module: str) -> int | None:
    """The layer of ``bmr_jax.<part>...``; ``None`` for the package root."""
    parts = module.split(".")
    if parts[0] != "bmr_jax" or len(parts) < 2 or parts[1] in ("__init__", "__main__"):
        return None
    return RANK[parts[1]]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "bmr_jax":
                yield from (f"bmr_jax.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_every_module_belongs_to_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__pycache__"}
    assert tops - {"__init__", "__main__"} == set(RANK)


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _layer(".".join(("bmr_jax", *path.relative_to(PACKAGE).with_suffix("").parts)))
        for module in _imports(path):
            if module.startswith("bmr_jax.") and own is not None and _layer(module) > own:
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert upward == []


def test_modules_and_functions_are_short():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 300:
            long.append(f"{path.relative_to(PACKAGE)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno >= 60:
                    long.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert long == []
