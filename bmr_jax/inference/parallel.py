"""Data-parallel SVI with JAX SPMD (``jax.sharding``): one mesh axis ``"data"`` over the
devices, every minibatch sharded along it, parameters and optimiser state replicated.

Nothing here is hand-written communication: the step is the single-device step with a sharding
constraint on the gathered batch, and XLA's SPMD partitioner splits the forward and backward
passes by batch and inserts the all-reduce of the gradients. The same code runs on CPU (use
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` to try N devices), GPU and TPU.

Multi-host: call :func:`initialize_distributed` (``bmr-jax run --distributed``) on every host
before anything else touches JAX; ``jax.devices()`` then lists every host's devices and the
mesh spans them all. Each host must see the same data files (the dataset is replicated), and
every host runs the same command::

    # host 0 of 2 (and the same with JAX_PROCESS_ID=1 on host 1)
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
        bmr-jax run configs/cifar10/vit-bmr_ss.yaml train.data_parallel=true --distributed

On SLURM, TPU pods and other clusters ``jax.distributed.initialize()`` finds these values
itself. Multi-host runs are not tested here (one machine); single-host multi-device runs are.
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


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` for multi-host runs (arguments from the environment)."""
    jax.distributed.initialize()
