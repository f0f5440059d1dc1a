"""One member of a grid: where its run folder stands before it runs, and how it ended.

:func:`run_member` is what every backend runs for a member (in this process, a Ray task or a
submitit job): it never raises for a failure of the run itself, so that one failing member
does not stop the others, and it returns a small picklable :class:`Outcome`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import NamedTuple

from bmr_jax.runs.checkpoints import run_order
from bmr_jax.runs.folder import RunFolder


class MemberState(NamedTuple):
    """A run folder before its member runs: ``kind`` is ``done``, ``partial`` or ``new``;
    ``block`` and ``step`` say where its newest checkpoint is (blocks completed, steps into
    the next)."""

    kind: str
    block: int = 0
    step: int = 0

    def describe(self, blocks: int) -> str:
        if self.kind != "partial":
            return self.kind
        if self.step:
            return f"partial: {self.step} steps into block {self.block + 1}/{blocks}"
        return f"partial at block {self.block}/{blocks}"


def member_state(out: str | Path) -> MemberState:
    """Where the run folder ``out`` stands: ``done`` (it has its summary), ``partial`` (a
    checkpoint to resume from) or ``new`` (nothing to resume: a run would start afresh)."""
    folder = RunFolder(out)
    if folder.is_finished():
        return MemberState("done")
    checkpoints = folder.checkpoints()
    if not checkpoints:
        return MemberState("new")
    block, step = run_order(checkpoints[-1])
    return MemberState("partial", block, step)


class Outcome(NamedTuple):
    """How a member ended: ``status`` is ``finished`` (ran to its end now), ``skipped``
    (finished before), ``failed`` (``error`` says why; its folder keeps its last checkpoint)
    or ``interrupted`` (SIGINT/SIGTERM; checkpointed; ``exit_code`` is 128 + the signal).
    ``summary`` is the run's ``summary.json`` when it has one."""

    name: str
    status: str
    summary: dict | None = None
    error: str | None = None
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("finished", "skipped")


def run_member(name: str, config, out: str | Path, *, data_dir=None, progress: bool = False,
               log=print, on_event=None) -> Outcome:  # fmt: skip
    """Runs (or resumes) the member ``name`` = ``config`` into ``out`` and says how it ended.

    The config's plugins are imported first (a fresh worker process has not read the grid).
    ``on_event`` is :func:`bmr_jax.runs.experiment.run_experiment`'s test hook.
    """
    from bmr_jax.errors import BmrJaxError
    from bmr_jax.runs.experiment import RunInterrupted, run_experiment
    from bmr_jax.runtime import enable_compilation_cache

    folder = RunFolder(out)
    if folder.is_finished():
        return Outcome(name, "skipped", folder.read_summary())
    try:
        for module in config.plugins:
            importlib.import_module(module)
        enable_compilation_cache()
        summary = run_experiment(config, out, data_dir=data_dir, progress=progress, log=log,
                                 on_event=on_event)  # fmt: skip
    except RunInterrupted as e:
        return Outcome(name, "interrupted", error=str(e), exit_code=e.exit_code)
    except BmrJaxError as e:
        return Outcome(name, "failed", error=str(e))
    except Exception as e:  # a bug or the machine; the member fails, the grid goes on
        return failure(name, e)
    return Outcome(name, "finished", summary)


def failure(name: str, error: BaseException) -> Outcome:
    """The ``failed`` outcome of ``error``: its type and the first line of its message."""
    first = (str(error).strip().splitlines() or [""])[0]
    return Outcome(name, "failed", error=f"{type(error).__name__}: {first}"[:300])
