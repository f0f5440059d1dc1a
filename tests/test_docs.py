"""The documentation runs: every code block of docs/extending.md in order, and the examples."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(python|yaml)\n(.*?)```", re.S)


def test_extending_tutorial_runs(tmp_path, monkeypatch, capsys):
    """The tutorial's prior, registered by a module its config names in ``plugins``, runs
    and prunes (docs/extending.md)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the tutorial adds "." to it
    blocks = BLOCK.findall((REPO / "docs" / "extending.md").read_text())
    assert len(blocks) >= 4
    namespace: dict = {}
    try:
        for language, code in blocks:
            first = code.splitlines()[0]
            if first.startswith("# file: "):
                (tmp_path / first.removeprefix("# file: ").strip()).write_text(code)
            else:
                assert language == "python"
                exec(compile(code, "docs/extending.md", "exec"), namespace)
    finally:  # the tutorial's module registers a prior: never leak it into other tests
        from bmr_jax.bayes import priors

        if "half_normal" in priors.PRIORS:
            priors.PRIORS.unregister("half_normal")
        sys.modules.pop("my_priors", None)
    out = capsys.readouterr().out
    acc, pruned = map(float, re.search(r"acc (0\.\d+), pruned (0\.\d+)", out).groups())
    assert acc > 0.8 and pruned > 0.1  # the tutorial's prior trains and prunes (chance: 0.1)


def test_prune_flax_example_is_short_and_prunes(capsys):
    path = REPO / "examples" / "prune_flax.py"
    code = [line for line in path.read_text().splitlines()
            if line.strip() and not line.startswith('"""')]  # fmt: skip
    assert len(code) < 20
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    accuracy, pruned = map(
        float, re.search(r"test accuracy ([\d.]+), pruned ([\d.]+)%", out).groups()
    )
    assert accuracy > 0.85 and 10 < pruned < 99.9
