"""The package layout is the data flow: data -> nets -> Bayesian model -> inference -> BMR ->
methods -> runs -> results -> export -> cli, no module imports from a layer above its own, and
no modules import each other in a circle (imports inside functions included). Modules stay
short enough to read at once."""

from __future__ import annotations

import ast
from pathlib import Path

import bmr_jax

PACKAGE = Path(bmr_jax.__file__).parent
LAYERS = ["errors registry runtime validate", "data", "nets", "bayes", "inference", "bmr",
          "methods posthoc", "runs", "results", "export", "cli"]  # fmt: skip
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


def _module_imports() -> dict[str, set[str]]:
    """``{module: the bmr_jax modules it imports}`` (a package's import counts as its
    ``__init__``'s; ``from package import module`` as the module's)."""
    names = {".".join(("bmr_jax", *p.relative_to(PACKAGE).with_suffix("").parts))
             .removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")}  # fmt: skip
    graph = {}
    for name, path in names.items():
        graph[name] = {m for m in _imports(path) if m in names and m != name}
        for node in ast.walk(ast.parse(path.read_text())):  # from package import module
            if isinstance(node, ast.ImportFrom) and node.module in names and node.level == 0:
                graph[name] |= {f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in names}  # fmt: skip
        graph[name].discard(name)
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a list of modules, the first again at the end), or
    ``None``: a depth-first search for an edge back to a module on the current path."""
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_circle_finder_finds_a_circle():
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_modules_import_each_other_in_a_circle():
    """Issue 38: config <-> tracking <-> folder and report <-> plots <-> frontier were two.
    Packages importing their own modules in ``__init__`` are left out (a package and its
    modules are one unit)."""
    graph = _module_imports()
    for name in graph:  # a package's __init__ re-exporting its modules is not a circle
        graph[name] = {m for m in graph[name] if not (name in graph and m.startswith(name + "."))}
    assert _circle(graph) is None


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
