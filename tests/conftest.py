"""Test set-up: real data from ../shared/data, never a download, a shared compilation cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

# Tests read the real files the same way users do: through BMR_JAX_DATA. They must never
# download, so downloads are off for the whole session (tests of the download code serve files
# from a loopback HTTP server and switch them on explicitly).
# A relative BMR_JAX_DATA (e.g. ../shared/data) is taken relative to the repository root.
_data = os.environ.get("BMR_JAX_DATA")
os.environ["BMR_JAX_DATA"] = str((REPO_ROOT / _data).resolve()) if _data else str(SHARED_DATA)
os.environ["BMR_JAX_OFFLINE"] = "1"
os.environ.setdefault("BMR_JAX_COMPILATION_CACHE", str(REPO_ROOT / ".jax_cache"))

from bmr_jax.runtime import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder laid out like ../shared/data that the tests read."""
    path = Path(os.environ["BMR_JAX_DATA"])
    if not (path / "mnist").is_dir():
        pytest.fail(
            f"real datasets not found at {path}: set BMR_JAX_DATA to a folder laid out like "
            f"../shared/data (mnist/, fashion_mnist/)"
        )
    return path


@pytest.fixture
def temporary_dataset():
    """Registers dataset specs for one test only: ``temporary_dataset(spec)``."""
    from bmr_jax.data.registry import DATASETS

    added = []

    def register(spec):
        added.append(DATASETS.register(spec.name, spec).name)
        return spec

    yield register
    for name in added:
        DATASETS.unregister(name)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted run of ``tests.runs.TINY`` (the reference the interruption, extension
    and contract tests compare against), run once per session."""
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.experiment import run_experiment
    from tests.runs import QUICKSTART, TINY

    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_experiment(load_config(QUICKSTART, TINY), out, progress=False, log=lambda s: None)
    return out
