"""Where a grid's members run: one after another in this process, as Ray tasks, or as SLURM jobs
through submitit. No scheduling of our own: Ray and SLURM place the members.

Every backend runs :func:`bmr_jax.runs.member.run_member` once per member and yields its
:class:`~bmr_jax.runs.member.Outcome` as it ends; a member whose worker dies (killed, out of
memory, the job cancelled) is a ``failed`` outcome, never the end of the grid. The run
folders must be on a file system every worker sees (a cluster's shared file system): a member
writes its own folder, checkpoints as ``bmr-jax run`` does, and a later grid call resumes it.

    bmr-jax grid GRID --backend ray [--address ADDR] [--cpus-per-run N] [--gpus-per-run G]
    bmr-jax grid GRID --backend slurm [--cpus-per-run N] [--gpus-per-run G] [--slurm KEY=VALUE]

Ray and submitit are the optional extra ``bmr-jax[cluster]``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bmr_jax.errors import ConfigError
from bmr_jax.runs.member import Outcome, failure, run_member
from bmr_jax.validate import check_fields, setting

# what a worker on another machine needs of the driver's environment
FORWARDED_ENV = ("BMR_JAX_DATA", "BMR_JAX_COMPILATION_CACHE")


@dataclass(frozen=True)
class Resources:
    """What each member asks of a cluster (a grid file's ``resources``; the command line's
    ``--cpus-per-run``, ``--gpus-per-run`` and ``--slurm`` replace its values).

    Attributes:
      cpus_per_run: CPU cores per member (Ray's ``num_cpus``, SLURM's ``cpus_per_task``).
      gpus_per_run: accelerators per member (Ray's ``num_gpus``, which may be a fraction;
        SLURM's ``gpus_per_node``, a whole number).
      slurm: further parameters of ``submitit.AutoExecutor.update_parameters``
        (``timeout_min``, ``mem_gb``, ``slurm_partition``, ``slurm_account``, ...).
    """

    cpus_per_run: int = setting(1, minimum=1)
    gpus_per_run: float = setting(0.0, minimum=0)
    slurm: dict = setting(factory=dict)

    def __post_init__(self):
        check_fields(self, "resources")


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--backend needs {module}: pip install 'bmr-jax[cluster]'") from None


def _forwarded_env() -> dict:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


Hooks = Mapping[str, Callable] | None


class LocalBackend:
    """The members one after another in this process (the default). A member stopped by
    SIGINT/SIGTERM stops the grid: the signal was meant for the whole command."""

    name = "local"

    def run(self, members, *, data_dir=None, progress: bool = True, log=print,
            on_event: Hooks = None) -> Iterator[Outcome]:  # fmt: skip
        for member in members:
            outcome = run_member(member.name, member.config, member.out, data_dir=data_dir,
                                 progress=progress, log=log,
                                 on_event=(on_event or {}).get(member.name))  # fmt: skip
            yield outcome
            if outcome.status == "interrupted":
                return


@dataclass
class RayBackend:
    """Every member a Ray task (``max_retries=0``: a failed member is reported, and the next
    grid call resumes it from its checkpoint). ``address`` joins a running cluster
    (``ray start --head`` on a node, ``auto`` for the one this node belongs to); without it
    Ray starts a local cluster for the grid and stops it after. ``init_options`` go to
    ``ray.init`` (``num_cpus`` for a local cluster, ...)."""

    address: str | None = None
    resources: Resources = field(default_factory=Resources)
    init_options: dict = field(default_factory=dict)
    name = "ray"

    def run(self, members, *, data_dir=None, progress: bool = False, log=print,
            on_event: Hooks = None) -> Iterator[Outcome]:  # fmt: skip
        ray = _require("ray")
        if not members:  # every run finished before: no cluster to start
            return
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True,
                     **self.init_options)  # fmt: skip
        try:
            yield from self._run(ray, members, data_dir, on_event or {})
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, members, data_dir, hooks) -> Iterator[Outcome]:
        env = _forwarded_env()
        if 0 < self.resources.gpus_per_run < 1:  # members share a GPU: JAX must not take it all
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * self.resources.gpus_per_run:.3f}"
        options = {"num_cpus": self.resources.cpus_per_run, "max_retries": 0,
                   "num_gpus": self.resources.gpus_per_run}  # fmt: skip
        if env:
            options["runtime_env"] = {"env_vars": env}
        task = ray.remote(run_member).options(**options)
        pending = {task.remote(m.name, m.config, str(m.out), data_dir=data_dir,
                               on_event=hooks.get(m.name)): m
                   for m in members}  # fmt: skip
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            member = pending.pop(done[0])
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayError as e:  # the worker died: killed, out of memory
                yield failure(member.name, e)


@dataclass
class SlurmBackend:
    """Every member a SLURM job through submitit, its logs in ``logs``. ``cluster="local"``
    runs the jobs as processes on this machine with submitit's local executor (what the tests
    use, and a dry run of a SLURM setup)."""

    logs: Path
    resources: Resources = field(default_factory=Resources)
    cluster: str = "slurm"
    poll_seconds: float = 5.0
    name = "slurm"

    def executor(self):
        submitit = _require("submitit")
        try:
            executor = submitit.AutoExecutor(folder=str(Path(self.logs) / "%j"),
                                             cluster=self.cluster)  # fmt: skip
        except RuntimeError as e:  # no SLURM here: submitit finds no srun
            raise ConfigError(f"--backend slurm: {str(e).splitlines()[0]} (no SLURM on this "
                              "machine; --slurm-cluster local runs the jobs here)") from None
        gpus = self.resources.gpus_per_run
        if gpus != int(gpus):
            raise ConfigError(f"--gpus-per-run: SLURM takes whole GPUs, got {gpus}")
        try:
            executor.update_parameters(name="bmr-jax", cpus_per_task=self.resources.cpus_per_run,
                                       gpus_per_node=int(gpus), **self.resources.slurm)  # fmt: skip
        except (TypeError, ValueError, NameError) as e:  # submitit names the bad parameter
            raise ConfigError(f"resources.slurm: {str(e).splitlines()[0]}") from None
        return submitit, executor

    def run(self, members, *, data_dir=None, progress: bool = False, log=print,
            on_event: Hooks = None) -> Iterator[Outcome]:  # fmt: skip
        submitit, executor = self.executor()
        if not members:
            return
        hooks, env = on_event or {}, _forwarded_env()
        data_dir = data_dir or env.get("BMR_JAX_DATA")
        jobs = {}
        for m in members:
            job = executor.submit(run_member, m.name, m.config, str(m.out), data_dir=data_dir,
                                  on_event=hooks.get(m.name))  # fmt: skip
            log(f"{m.name}: job {job.job_id}")
            jobs[job] = m
        for job in submitit.helpers.as_completed(list(jobs), poll_frequency=self.poll_seconds):
            try:
                yield job.result()
            except Exception as e:  # FailedJobError, UncompletedJobError: the job died
                yield failure(jobs[job].name, e)


BACKENDS = ("local", "ray", "slurm")
