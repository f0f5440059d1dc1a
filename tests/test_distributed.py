"""Multi-process SPMD (``bmr-jax run --distributed``) on one machine: two processes with one CPU
device each, joined by ``jax.distributed.initialize`` over loopback (gloo collectives), train
one data-parallel run; a single process with two CPU devices is the reference.

SPMD partitions the same program either way, so the two processes must give the reference's
results bit for bit, and each writes its own run folder (process 1: ``<out>,process=1``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.runs import QUICKSTART, REPO, TINY, records

RUN = [*TINY, "train.blocks=2", "train.data_parallel=true"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """The run in a child process writing everything it prints to ``log`` (a file, not a pipe:
    a joined process blocked on a full pipe would hold the other at the shutdown barrier).
    With ``JAX_LOG_COMPILES`` JAX prints ``Compiling jit(NAME) ...`` for every compilation it
    starts, also when the persistent cache holds the result."""
    command = [sys.executable, "-m", "bmr_jax", "run", QUICKSTART, *RUN, "--quiet", *args]
    with log.open("w") as sink:  # the child keeps its own copy of the descriptor
        env = {**os.environ, "JAX_LOG_COMPILES": "1", **env}
        return subprocess.Popen(command, cwd=REPO, env=env, text=True, stdout=sink,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _finish(process: subprocess.Popen, log: Path, timeout: int) -> str:
    process.wait(timeout=timeout)
    return log.read_text()


def test_two_processes_over_loopback_equal_one_process_with_two_devices(tmp_path):
    port = _free_port()
    joined = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
              "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}  # fmt: skip
    out = tmp_path / "run"
    logs = [tmp_path / f"{name}.log" for name in ("process0", "process1", "reference")]
    processes = [
        _start(["--distributed", "--out", str(out)], {**joined, "JAX_PROCESS_ID": str(k)}, logs[k])
        for k in (0, 1)
    ]
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    reference = _start(["--out", str(tmp_path / "reference")], two_devices, logs[2])
    outputs = [_finish(p, log, 600) for p, log in zip([*processes, reference], logs, strict=True)]
    for p, output in zip([*processes, reference], outputs, strict=True):
        assert p.returncode == 0, output[-5000:]
        assert "cpu (2 x cpu)" in output  # every process sees both devices of the mesh
        # the state replicated on the mesh from the start: the reduce before block 2 returns
        # it with the same type, so the training step and the predictive compile once each
        # (a state left on the host the first time compiled both twice)
        for step in ("update", "probs"):
            assert output.count(f"Compiling jit({step}) ") == 1, step
    second = tmp_path / "run,process=1"
    assert records(out) == records(second) == records(tmp_path / "reference")
    assert len(records(out)) == 2 and records(out)[-1]["pruned_fraction"] > 0


def test_distributed_without_every_variable_is_one_line_exit_2(tmp_path):
    log = tmp_path / "run.log"
    p = _start(["--distributed", "--out", str(tmp_path / "run")],
               {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": ""}, log)  # fmt: skip
    output = _finish(p, log, 300)
    assert p.returncode == 2
    assert output.strip().splitlines()[-1] == (
        "bmr-jax: error: --distributed: set JAX_PROCESS_ID as well")
