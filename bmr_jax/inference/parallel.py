"""Data-parallel SVI with JAX SPMD (``jax.sharding``): one mesh axis ``"data"`` over the
devices, every minibatch sharded along it, parameters and optimiser state replicated.

Nothing here is hand-written communication: the step is the single-device step with a sharding
constraint on the gathered batch, and XLA's SPMD partitioner splits the forward and backward
passes by batch and inserts the all-reduce of the gradients. The same code runs on CPU (use
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` to try N devices), GPU and TPU.

Multi-host: call :func:`initialize_distributed` (``bmr-jax run --distributed``) in every
process before anything else touches JAX; ``jax.devices()`` then lists every process's devices
and the mesh spans them all. Each process must see the same data files (the dataset is
replicated), and every process runs the same command::

    # host 0 of 2 (and the same with JAX_PROCESS_ID=1 on host 1)
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
        bmr-jax run configs/cifar10/vit-bmr_ss.yaml train.data_parallel=true --distributed \\
        --out runs/cifar10/vit-bmr_ss

On SLURM, TPU pods and other clusters ``jax.distributed.initialize()`` finds these values
itself. Every process holds the whole state and writes its own run folder (process 0 the
``--out`` given, process ``k`` ``<out>,process=k``, :func:`process_run_folder`), so that no two
processes write one file and each resumes from its own checkpoints; the folders hold the same
results. ``tests/test_distributed.py`` runs two CPU processes joined over loopback, and gets the
results of one process with two devices bit for bit.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bmr_jax.errors import BmrJaxError

AXIS = "data"


class ParallelError(BmrJaxError):
    """The data-parallel set-up cannot work (e.g. a batch the devices do not divide)."""


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices`` (default: every device)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(devices, (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def place_replicated(tree, mesh: Mesh | None):
    """``tree``'s arrays replicated on ``mesh`` (``tree`` itself without a mesh).

    Under a mesh the sharding is part of an array's type: a state fresh from the host (or read
    back from a checkpoint) enters a compiled step with another type than the replicated state
    the steps return, and every step, reduce and predictive would be compiled twice. Placing
    the state once, where a run starts, keeps one compilation of each."""
    return tree if mesh is None else jax.device_put(tree, replicated(mesh))


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(AXIS))


def check_batch(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    if batch_size % mesh.size:
        raise ParallelError(
            f"{what} {batch_size} is not divisible by the {mesh.size} devices of the mesh"
        )


def shard_batch(x, mesh: Mesh | None):
    """``x`` constrained to be split along its first axis over the mesh (inside ``jit``); a
    first axis the devices do not divide is left to XLA."""
    if mesh is None or x.shape[0] % mesh.size:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))


def process_run_folder(out: str) -> str:
    """The run folder of this process in a multi-process run: ``out`` for process 0,
    ``<out>,process=k`` for process ``k``."""
    k = jax.process_index()
    return out if k == 0 else f"{out},process={k}"


DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed() -> None:
    """``jax.distributed.initialize`` for multi-host runs: with the coordinator's
    ``host:port``, the number of processes and this one's index from
    ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES`` and ``$JAX_PROCESS_ID`` when they are
    set (jax itself reads only the first), else from what jax detects (SLURM, Open MPI, TPU
    pods). Raises :class:`ParallelError` in one line when it cannot."""
    import os

    given = {k: os.environ[k] for k in DISTRIBUTED_ENV if os.environ.get(k)}
    try:
        if given:
            missing = [k for k in DISTRIBUTED_ENV if k not in given]
            if missing:
                raise ValueError(f"set {', '.join(missing)} as well")
            jax.distributed.initialize(given["JAX_COORDINATOR_ADDRESS"],
                                       int(given["JAX_NUM_PROCESSES"]),
                                       int(given["JAX_PROCESS_ID"]))  # fmt: skip
        else:
            jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ParallelError(f"--distributed: {first}") from None
