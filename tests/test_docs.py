"""The documentation runs: every code block of docs/extending.md in order, and the examples."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AFTER_EXAMPLE = "# after examples/prune_flax.py"
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
            if first.startswith(AFTER_EXAMPLE):  # run by the example's test below
                continue
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


def test_prune_flax_example_is_short_and_prunes_and_exports(capsys):
    """The example trains and prunes; docs/extending.md's export of its result, run on the
    example's own variables, hands back a network that computes what the masked one does."""
    import jax.numpy as jnp
    import numpy as np

    path = REPO / "examples" / "prune_flax.py"
    code = [line for line in path.read_text().splitlines()
            if line.strip() and not line.startswith('"""')]  # fmt: skip
    assert len(code) < 20
    namespace = runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    accuracy, pruned = map(
        float, re.search(r"test accuracy ([\d.]+), pruned ([\d.]+)%", out).groups()
    )
    assert accuracy > 0.85 and 10 < pruned < 99.9
    [export] = [code for _, code in BLOCK.findall((REPO / "docs" / "extending.md").read_text())
                if code.startswith(AFTER_EXAMPLE)]  # fmt: skip
    exec(compile(export, "docs/extending.md", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["layers.1", "layers.3"]
    x = jnp.asarray(namespace["ds"].test.images[:256])
    masked = namespace["nnx"].merge(namespace["graphdef"], namespace["params"])(x)
    np.testing.assert_allclose(np.asarray(namespace["small"].module(x)), np.asarray(masked),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_the_posthoc_example_is_short_and_prunes_a_trained_network(capsys):
    """examples/posthoc_flax.py: a network trained with plain Adam, pruned to 95 % by BMR on
    its Laplace posterior and refitted, still classifies (measured 0.924; chance 0.1), and the
    pruned weights are zero in the network it ends with."""
    import jax
    import numpy as np

    path = REPO / "examples" / "posthoc_flax.py"
    code = [line for line in path.read_text().splitlines()
            if line.strip() and not line.startswith('"""')]  # fmt: skip
    assert len(code) <= 20
    namespace = runpy.run_path(str(path), run_name="__main__")
    accuracy = float(re.search(r"test accuracy ([\d.]+)", capsys.readouterr().out).group(1))
    assert accuracy > 0.88
    kernels = [(np.asarray(p), np.asarray(m)) for p, m in
               zip(jax.tree.leaves(namespace["params"]), jax.tree.leaves(namespace["masks"]),
                   strict=True)
               if np.ndim(p) == 2]  # fmt: skip
    pruned = sum((~m).sum() for _, m in kernels) / sum(m.size for _, m in kernels)
    assert pruned == pytest.approx(0.95, abs=1e-3)
    assert all(np.all(p[~m] == 0) for p, m in kernels)
