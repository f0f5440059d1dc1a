"""Shared helpers of the run-folder tests: a tiny real config, comparing run folders, and
stopping a run at an exact point through the loop's event hook (no sleeps, no timing)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
# three blocks: the warm-up, then two with a reduce step before them; a dense network, whose
# run compiles in half the time of the quickstart's LeNet-5 and reruns in a quarter of it
# (convolutions: the LeNet-5 cases of test_export and test_shrunk_eval)
TINY = ["method=bmr_ss", "data.name=mnist_mini", "net.name=lenet_300_100", "net.preset=small",
        "train.blocks=3", "train.steps_per_block=20", "eval.samples=2"]  # fmt: skip
TIMING = {"train_seconds", "reduce_seconds", "eval_seconds", "seconds"}


class Crash(Exception):
    """Stands for the process dying at that point: nothing after it is written."""


def records(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold bit-identical results (timings aside)."""
    assert records(a) == records(b)
    with np.load(a / "posterior.npz") as pa, np.load(b / "posterior.npz") as pb:
        assert sorted(pa) == sorted(pb)
        for key in pa:
            np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def at(point: tuple, action: str):
    """An ``on_event`` hook doing ``action`` once when the run reaches ``point`` =
    ``(event, block, step)``: ``"crash"`` raises :class:`Crash`, ``"SIGINT"``/``"SIGTERM"``
    sends that signal to this process (the run's handler catches it), ``"SIGKILL"`` kills it."""
    fired = []

    def hook(name, block, step):
        if (name, block, step) != tuple(point) or fired:
            return
        fired.append(True)
        if action == "crash":
            raise Crash(point)
        os.kill(os.getpid(), getattr(signal, action))

    return hook
