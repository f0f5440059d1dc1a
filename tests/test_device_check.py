"""The accelerator check (``scripts/device_check.sh``, issue 40) run as on a lent machine, at
its ``--smoke`` sizes on this CPU, so that it cannot rot between lendings; and its version
check against hand-made pyproject files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.runs import REPO


def _driver():
    spec = importlib.util.spec_from_file_location("device_check", REPO / "scripts" /
                                                  "device_check.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_versions_are_checked_against_the_bounds_naming_every_problem(tmp_path):
    """``>=`` on numeric parts (0.4.35 < 0.10.2: not a string comparison); a package below
    its bound and one not installed are both named, in one line."""
    check = _driver()
    assert check._at_least("0.10.2", "0.4.35") and not check._at_least("0.4.9", "0.4.35")
    assert check._at_least("2.1.0rc1", "2.1") and check._at_least("1.26", "1.26.0")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy>=1.0", "jax>=999.0",\n'
                         '  "no-such-package-bmr>=1.0"]\n')  # fmt: skip
    with pytest.raises(check.CheckFailed) as raised:
        check.check_versions(pyproject)
    message = str(raised.value)
    assert "jax " in message and "below pyproject's >=999.0" in message
    assert "no-such-package-bmr not installed" in message and "numpy" not in message
    assert check.check_versions(REPO / "pyproject.toml")["jax"]  # this install is in bounds


def test_the_smoke_check_measures_every_phase(tmp_path):
    """The shell script end to end on the CPU: versions and device, the numerics tests,
    a step benchmark with its ratios to Adam, two blocks each of ViT and Mixer BMR-S&S with
    their pruned fractions, and an export's latency at batch 1 and 1000."""
    out = tmp_path / "out"
    done = subprocess.run([str(REPO / "scripts" / "device_check.sh"), "--smoke"],
                          env={**os.environ, "OUT": str(out), "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "device_check.json").read_text())
    assert report["device"]["platform"] == "cpu" and report["versions"]["flax"]
    tests = report["tests"]
    assert tests["rc"] == 0 and tests["tests"] >= 3 and tests["failures"] == 0
    bench = report["bench"]["mlp"]
    assert bench["ratio_to_adam"]["adam"] == 1.0 and bench["ms"]["bmr_ss"] > 0
    assert set(bench["ms"]) >= {"flat_ff", "tiered_ff", "bmr_ss", "sparse_vd", "flat_ff_local"}
    for net in ("vit", "mixer"):
        run = report["runs"][net]
        assert run["rc"] == 0 and [b["block"] for b in run["blocks"]] == [1, 2], net
        assert all(0.0 <= b["pruned_fraction"] <= 1.0 for b in run["blocks"])
    export = report["export"]
    assert export["rc"] == 0 and len(export["layers"]) == 3
    assert "100 -> " in export["layers"][0]  # units were removed
    for batch in ("batch_1", "batch_1000"):
        assert export[batch]["dense_ms"] > 0 and export[batch]["speedup"] > 0
    for log in ("tests.log", "run_vit.log", "run_mixer.log", "export.log"):
        assert (out / "logs" / log).is_file()
