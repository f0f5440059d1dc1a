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

from tests.runs import QUICKSTART, REPO, TINY, records

RUN = [*TINY, "train.blocks=2", "train.data_parallel=true"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "bmr_jax", "run", QUICKSTART, *RUN, "--quiet", *args]
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def test_two_processes_over_loopback_equal_one_process_with_two_devices(tmp_path):
    port = _free_port()
    joined = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
              "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}  # fmt: skip
    out = tmp_path / "run"
    processes = [
        _start(["--distributed", "--out", str(out)], {**joined, "JAX_PROCESS_ID": str(k)})
        for k in (0, 1)
    ]
    reference = _start(["--out", str(tmp_path / "reference")],
                       {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})  # fmt: skip
    for p in [*processes, reference]:
        output, _ = p.communicate(timeout=600)
        assert p.returncode == 0, output
        assert "cpu (2 x cpu)" in output  # every process sees both devices of the mesh
    second = tmp_path / "run,process=1"
    assert records(out) == records(second) == records(tmp_path / "reference")
    assert len(records(out)) == 2 and records(out)[-1]["pruned_fraction"] > 0


def test_distributed_without_every_variable_is_one_line_exit_2(tmp_path):
    p = _start(["--distributed", "--out", str(tmp_path / "run")],
               {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": ""})  # fmt: skip
    output, _ = p.communicate(timeout=300)
    assert p.returncode == 2
    assert output.strip().splitlines()[-1] == (
        "bmr-jax: error: --distributed: set JAX_PROCESS_ID as well")
