"""The accelerator check (issue 40): what the library does on a lent GPU, measured in one call.

``scripts/device_check.sh`` installs the project and runs this; ``--smoke`` runs every phase at
tiny sizes on whatever device JAX sees (a CPU in CI: ``tests/test_device_check.py``), so the
script cannot rot between lendings. Phases, each with its own share of ``--budget`` seconds,
each writing its log to ``OUT/logs/<phase>.log``; the results go to ``OUT/device_check.json``
after every phase (a phase cut short keeps what the earlier ones measured):

1. ``versions``: the device JAX sees, and every dependency's version against pyproject's
   bounds (a missing package or one below its bound stops the check with exit 2, naming it);
2. ``tests``: the tests marked ``numerics`` (delta_f, reduce, guides, evaluate, export
   equivalence), selected by marker (smoke: those of tests/test_guides.py);
3. ``bench``: ``bmr-jax bench step`` for every network at the paper preset (milliseconds per
   step of Adam and of every method, and their ratios to Adam);
4. ``runs``: paper-size Fashion-MNIST ViT and Mixer BMR-S&S (reference mode) for as many
   500-step blocks as their share allows, stopped by SIGTERM (the run checkpoints), with the
   pruned fraction and accuracy after each block (the paper: 0.80 and 0.78 pruned by block 5);
5. ``export``: a short structured-BMR run of LeNet-5-Caffe, exported, and the latency of the
   exported network against the dense one at batch 1 and 1000 on the device.

    OUT=/tmp/check scripts/device_check.sh [--smoke] [--budget 520] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARES = {"tests": 0.2, "bench": 0.25, "runs": 0.4, "export": 0.15}  # of what versions leave
NETS = ("mlp", "lenet5", "lenet_300_100", "lenet5_caffe", "vit", "mixer")


class CheckFailed(Exception):
    """A phase found the device or the install unfit: exit 2 with this line."""


def _at_least(version: str, bound: str) -> bool:
    """``version >= bound`` on their leading numeric parts (``0.4.35``, ``2.1.0rc1``)."""

    def numbers(text):
        return tuple(int(x) for x in re.findall(r"\d+", re.match(r"[\d.]+", text).group()))

    have, need = numbers(version), numbers(bound)
    width = max(len(have), len(need))  # 1.26 == 1.26.0
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def check_versions(pyproject: Path = REPO / "pyproject.toml") -> dict:
    """``{package: version}`` of every dependency of pyproject's ``[project]``, each checked
    against its ``>=`` bound; :class:`CheckFailed` naming every one missing or too old."""
    requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found, problems = {}, []
    for requirement in requirements:
        name, bound = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([\w.]+)\s*", requirement).groups()
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} not installed (pyproject: >={bound})")
            continue
        if not _at_least(found[name], bound):
            problems.append(f"{name} {found[name]} is below pyproject's >={bound}")
    if problems:
        raise CheckFailed("versions: " + "; ".join(problems))
    return found


def device_info() -> dict:
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "devices": len(devices), "jax": jax.__version__,
            **{name: _version(name) for name in ("jaxlib", "flax", "numpyro", "optax",
                                                 "equinox")}}  # fmt: skip


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _run(command: list[str], log: Path, budget: float, stdout: Path | None = None,
         ) -> tuple[int, bool]:  # fmt: skip
    """Runs ``command`` with its output in ``log`` (its standard output in ``stdout``, if
    given); past ``budget`` seconds it gets SIGTERM (a ``bmr-jax run`` checkpoints and
    stops), then SIGKILL 60 s later. ``(rc, timed_out)``."""
    with log.open("a") as out, (stdout or log).open("a") as result:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, stdout=result if stdout else out,
                                   stderr=subprocess.STDOUT if stdout is None else out, cwd=REPO)
        try:
            return process.wait(timeout=max(budget, 1.0)), False
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=60), True
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait(), True


def phase_tests(out: Path, budget: float, smoke: bool) -> dict:
    """The ``numerics``-marked tests (in smoke mode those of one file)."""
    junit = out / "tests.xml"
    where = ["tests/test_guides.py"] if smoke else []
    rc, timed_out = _run([sys.executable, "-m", "pytest", "-m", "numerics", "-q",
                          "-p", "no:cacheprovider", f"--junitxml={junit}", *where],
                         out / "logs" / "tests.log", budget)  # fmt: skip
    counts = {}
    if junit.is_file():
        head = re.search(r"<testsuite [^>]*>", junit.read_text())
        counts = {k: int(v) for k, v in re.findall(r'(tests|failures|errors|skipped)="(\d+)"',
                                                    head.group() if head else "")}  # fmt: skip
    return {"rc": rc, "timed_out": timed_out, **counts}


def phase_bench(out: Path, budget: float, smoke: bool, data_dir: str | None) -> dict:
    """``bmr-jax bench step`` per network: ms per step and the ratio to Adam."""
    nets = [("mlp", "small")] if smoke else [(net, "paper") for net in NETS]
    results, deadline = {}, time.monotonic() + budget
    for net, preset in nets:
        left = deadline - time.monotonic()
        if left < 5:
            results[net] = "no time left"
            continue
        path = out / "logs" / f"bench_{net}.json"
        rc, _ = _run([sys.executable, "-m", "bmr_jax", "bench", "step", "--net", net,
                      "--preset", preset, "--dataset", "mnist_mini", "--json",
                      "--rounds", "3" if smoke else "20"], out / "logs" / "bench.log", left,
                     stdout=path)  # fmt: skip
        text = path.read_text().strip()
        if rc != 0 or not text:
            results[net] = f"failed (rc {rc}; logs/bench.log)"
            continue
        seconds = json.loads(text.splitlines()[-1])
        results[net] = {"preset": preset, "ms": {k: 1e3 * v for k, v in seconds.items()},
                        "ratio_to_adam": {k: v / seconds["adam"] for k, v in seconds.items()}}
    return results


def phase_runs(out: Path, budget: float, smoke: bool, data_dir: str | None) -> dict:
    """BMR-S&S on the ViT and the Mixer for a share of the budget each, stopped by SIGTERM;
    the pruned fraction and accuracy after every finished block."""
    results = {}
    for i, net in enumerate(("vit", "mixer")):
        folder = out / "runs" / net
        if smoke:
            args = [f"configs/fashion_mnist/{net}-bmr_ss.yaml", "data.name=mnist_mini",
                    "net.preset=small", "train.blocks=2", "train.steps_per_block=3",
                    "eval.samples=1", "data.validation=500"]  # fmt: skip
        else:
            args = [f"configs/fashion_mnist/{net}-bmr_ss.yaml", "eval.samples=10",
                    "eval.every=1"]  # fmt: skip
        command = [sys.executable, "-m", "bmr_jax", "run", *args, "--out", str(folder), "--quiet"]
        if data_dir:
            command += ["--data-dir", data_dir]
        start = time.monotonic()
        rc, stopped = _run(command, out / "logs" / f"run_{net}.log", budget / (2 - i))
        budget -= time.monotonic() - start
        records = []
        if (folder / "metrics.jsonl").is_file():
            records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        results[net] = {
            "rc": rc, "stopped_by_budget": stopped,
            "blocks": [{k: r.get(k) for k in ("block", "step", "pruned_fraction", "acc",
                                              "train_seconds", "eval_seconds")}
                       for r in records],
        }  # fmt: skip
    return results


def phase_export(out: Path, budget: float, smoke: bool, data_dir: str | None) -> dict:
    """A short run that prunes units, exported; dense and exported latency at batch 1 and 1000."""
    folder = out / "runs" / "export"
    if smoke:
        args = ["configs/quickstart.yaml", "method=bmr_ss", "net.name=lenet_300_100",
                "net.preset=small", "train.blocks=2", "train.steps_per_block=10",
                "eval.samples=1", "data.validation=500", "bmr.rule=target",
                "bmr.rule_options={schedule: {final: 0.97, begin: 1, end: 2}}"]  # fmt: skip
    else:
        args = ["configs/mnist_structured/lenet5_caffe-bmr_group.yaml", "data.name=mnist_mini",
                "train.blocks=6", "train.steps_per_block=300", "eval.samples=5"]  # fmt: skip
    rc, stopped = _run([sys.executable, "-m", "bmr_jax", "run", *args, "--out", str(folder),
                        "--quiet"], out / "logs" / "export.log", 0.7 * budget)  # fmt: skip
    if rc != 0:
        return {"rc": rc, "stopped_by_budget": stopped}
    from bmr_jax import export
    from bmr_jax.runs.experiment import load_dataset

    source = export.read_run(folder, data_dir=data_dir)
    small = export.export_network(source.module, source.input_shape, source.masks,
                                  net=source.config.net.name, preset=source.config.net.preset,
                                  num_classes=source.num_classes,
                                  sequential=source.sequential)  # fmt: skip
    images = load_dataset(source.config, data_dir).test.images
    result = {"rc": rc, "layers": [c.line() for c in small.layers]}
    for batch in (1, 1000):
        seconds = export.latencies({"dense": source.module, "exported": small.module}, images,
                                   batch, rounds=5 if smoke else 50)  # fmt: skip
        result[f"batch_{batch}"] = {"dense_ms": 1e3 * seconds["dense"],
                                    "exported_ms": 1e3 * seconds["exported"],
                                    "speedup": seconds["dense"] / seconds["exported"]}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where the JSON and the logs go ($OUT)")
    parser.add_argument("--smoke", action="store_true", help="every phase at tiny sizes")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check (default 520; smoke 600, a bound "
                             "that a loaded CPU stays well inside)")
    parser.add_argument("--data-dir", default=None, help="data laid out like shared/data")
    args = parser.parse_args(argv)
    out, start = Path(args.out), time.monotonic()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    budget = args.budget or (600.0 if args.smoke else 520.0)
    data_dir = args.data_dir or os.environ.get("BMR_JAX_DATA")
    report = {"smoke": args.smoke, "budget_s": budget}

    def save():
        report["seconds"] = time.monotonic() - start
        (out / "device_check.json").write_text(json.dumps(report, indent=1))

    try:
        report["versions"] = check_versions()
        report["device"] = device_info()
    except CheckFailed as e:
        report["error"] = str(e)
        save()
        print(f"device_check: {e}", file=sys.stderr)
        return 2
    save()
    left = budget - (time.monotonic() - start)
    phases = {"tests": lambda b: phase_tests(out, b, args.smoke),
              "bench": lambda b: phase_bench(out, b, args.smoke, data_dir),
              "runs": lambda b: phase_runs(out, b, args.smoke, data_dir),
              "export": lambda b: phase_export(out, b, args.smoke, data_dir)}  # fmt: skip
    for name, phase in phases.items():
        phase_start = time.monotonic()
        report[name] = phase(SHARES[name] * left)
        report[f"{name}_seconds"] = time.monotonic() - phase_start
        save()
        print(f"device_check: {name} done in {report[f'{name}_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
