"""The documentation runs: every code block of docs/extending.md in order, and the examples."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(python|yaml)\n(.*?)```", re.S)


def test_extending_tutorial_runs(tmp_path, monkeypatch, capsys):
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
    assert re.search(r"acc 0\.\d+, pruned 0\.\d+", out)


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


def test_readme_deploy_section_runs(tmp_path, monkeypatch, capsys):
    """The structured route end to end: a real (small) group-BMR run, its export, the narrower
    network loaded back, its speed-up measured against the dense one, its predictive."""
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.experiment import run_experiment

    section = (REPO / "README.md").read_text().split("## Deploy the pruned network")[1]
    (language, code), = BLOCK.findall(section.split("\n## ")[0])
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["method=bmr_group", "data.name=mnist_mini", "net.name=mlp",
                                "net.preset=small", "train.blocks=4",
                                "train.steps_per_block=100", "eval.samples=2"])  # fmt: skip
    run_experiment(config, "runs/group", progress=False, log=lambda line: None)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (100, 10)
    assert abs(float(namespace["probs"].sum(axis=1).mean()) - 1.0) < 1e-5
    out = capsys.readouterr().out
    widths = [int(w) for w in re.findall(r"hidden\.\d: 100 -> (\d+)", out)]
    assert len(widths) == 4 and sum(widths) < 400  # whole units removed by the export
    assert re.search(r"[\d.]+x faster at batch 1000", out)
