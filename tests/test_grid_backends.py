"""`bmr-jax grid` beyond one process: the dry run, a failing member that does not stop the
others, and the Ray and SLURM (submitit) backends with a member killed mid-run and resumed.

The kill is real: the member's worker process sends itself SIGKILL right after its block-1
checkpoint (``tests.runs.at``), so nothing after it is written, exactly where a dead node would
leave it. The rerun must complete that member with the results of an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil

import pytest

from bmr_jax.cli import main
from bmr_jax.errors import ConfigError
from bmr_jax.runs.backends import RayBackend, Resources, SlurmBackend
from bmr_jax.runs.config import load_config
from bmr_jax.runs.grid import dry_run, outcome_table, read_grid, run_grid
from bmr_jax.runs.member import member_state
from tests.runs import QUICKSTART, REPO, TINY, assert_same_run, at

try:  # imported here, not in a test: submitit's loggers keep the sys.stdout of their import,
    import submitit  # noqa: F401  and a test's capsys stream is closed after that test
except ImportError:
    pass

SEEDS = (136, 137, 138)  # the middle one is the session's tiny_run (TINY, seed 137)
KILLED = f"configs/quickstart,seed={SEEDS[1]}"


def _grid_file(tmp_path, extra: str = "") -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(f"configs: [{QUICKSTART}]\nproduct: {{seed: {list(SEEDS)}}}\n"
                    f"overrides: {TINY}\nout: out\n{extra}")  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def uninterrupted(tiny_run, tmp_path_factory):
    """The killed member's config run once without interruption (the session's tiny_run)."""
    grid = read_grid(_grid_file(tmp_path_factory.mktemp("reference")))
    member = next(r for r in grid.runs if r.name == KILLED)
    assert member.config == load_config(QUICKSTART, TINY)
    return tiny_run


def _kill_and_resume(tmp_path, backend, uninterrupted):
    """Runs the grid on ``backend`` with the middle member killed after its block-1 checkpoint,
    checks the other two finished and the dry run's states, then runs it again and checks the
    killed member's results equal an uninterrupted run's."""
    path = _grid_file(tmp_path)
    grid = read_grid(path)
    hooks = {KILLED: at(("checkpoint", 1, 0), "SIGKILL")}
    first = run_grid(grid.runs, backend=backend, progress=False, on_event=hooks)
    assert [o.status for o in first] == ["finished", "failed", "finished"], outcome_table(first)
    assert member_state(grid.runs[1].out).block == 1
    listing = dry_run(grid.runs)
    assert "partial at block 1/3" in listing and listing.count("done") == 3  # 2 + the count line
    second = run_grid(grid.runs, backend=backend, progress=False)
    assert [o.status for o in second] == ["skipped", "finished", "skipped"], outcome_table(second)
    assert_same_run(grid.runs[1].out, uninterrupted)
    table = outcome_table(second)
    assert table.count("| skipped |") == 2 and f"| {KILLED} | finished |" in table
    return path


def _nothing_left(path, backend_args, capsys):
    """The command line on a finished grid: every run skipped, exit status 0."""
    capsys.readouterr()
    assert main(["grid", path, "--quiet", *backend_args]) == 0
    assert "0 runs completed, 3 already finished" in capsys.readouterr().out


def test_a_failing_member_does_not_stop_the_others_and_the_dry_run_says_so(tmp_path, capsys):
    path = _grid_file(tmp_path)
    grid = read_grid(path)
    grid.runs[1].out.mkdir(parents=True)
    (grid.runs[1].out / "notes.txt").write_text("not a run folder")  # the member must refuse it
    assert main(["grid", path, "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "2 runs completed, 0 already finished, 1 not finished" in out
    assert f"| {KILLED} | failed: " in out and "not a bmr-jax run folder" in out
    assert member_state(grid.runs[0].out).kind == member_state(grid.runs[2].out).kind == "done"
    assert main(["grid", path, "--dry-run"]) == 0  # (partial states: the backend tests below)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:] for line in lines[:3]] == [
        ["done", str(grid.runs[0].out)], ["new", str(grid.runs[1].out)],
        ["done", str(grid.runs[2].out)]]  # fmt: skip
    assert lines[3] == "3 runs: 2 done, 1 to run"


def test_resources_from_the_grid_file_and_the_command_line(tmp_path):
    path = _grid_file(tmp_path, "resources: {cpus_per_run: 4, gpus_per_run: 1, "
                                "slurm: {timeout_min: 60}}\n")  # fmt: skip
    assert read_grid(path).resources == Resources(4, 1.0, {"timeout_min": 60})
    with pytest.raises(ConfigError, match="resources.cpus_per_run: must be >= 1"):
        read_grid(_grid_file(tmp_path, "resources: {cpus_per_run: 0}\n"))
    with pytest.raises(ConfigError, match="unknown resources key 'gpus'"):
        read_grid(_grid_file(tmp_path, "resources: {gpus: 1}\n"))
    with pytest.raises(ConfigError, match="SLURM takes whole GPUs"):
        SlurmBackend(tmp_path, Resources(gpus_per_run=0.5), cluster="local").executor()
    with pytest.raises(ConfigError, match="resources.slurm"):
        bad = Resources(slurm={"no_such_parameter": 1})
        SlurmBackend(tmp_path, bad, cluster="local").executor()


def test_bad_backend_arguments_exit_2(tmp_path, capsys):
    path = _grid_file(tmp_path)
    assert main(["grid", path, "--backend", "slurm", "--slurm", "timeout_min"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["grid", path, "--backend", "ray", "--cpus-per-run", "0"]) == 2
    assert "resources.cpus_per_run: must be >= 1" in capsys.readouterr().err
    # issue 38: a bad --slurm key, and SLURM itself missing, are refused before any run
    pytest.importorskip("submitit")
    args = ["grid", path, "--backend", "slurm", "--slurm-cluster", "local", "--quiet"]
    assert main([*args, "--slurm", "no_such_parameter=1"]) == 2
    err = capsys.readouterr().err
    assert "resources.slurm" in err and err.count("\n") == 1
    started = [p.name for p in (tmp_path / "out").glob("*") if p.name != "submitit"]
    assert started == []  # no run folder: refused before the grid began
    if shutil.which("srun") is None:  # this machine has no SLURM: one line, not a traceback
        assert main(["grid", path, "--backend", "slurm", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "--backend slurm:" in err and "no SLURM" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module; its workers import ``tests`` and run at
    the test's priority (Ray's own default, niceness 15, starves them beside other tests)."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_worker_niceness"] = "0"  # read by the raylet that ray.init starts
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # fmt: skip
    yield ray
    ray.shutdown()
    del os.environ["RAY_worker_niceness"]


def test_ray_backend_kills_one_member_and_resumes_it(tmp_path, ray_cluster, uninterrupted,
                                                     capsys):  # fmt: skip
    path = _kill_and_resume(tmp_path, RayBackend(resources=Resources(cpus_per_run=1)),
                            uninterrupted)  # fmt: skip
    _nothing_left(path, ["--backend", "ray"], capsys)


def test_slurm_backend_through_submitit_local(tmp_path, uninterrupted, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    backend = SlurmBackend(tmp_path / "logs", Resources(cpus_per_run=1), cluster="local",
                           poll_seconds=0.2)  # fmt: skip
    path = _kill_and_resume(tmp_path, backend, uninterrupted)
    assert any((tmp_path / "logs").iterdir())  # submitit's job folders
    _nothing_left(path, ["--backend", "slurm", "--slurm-cluster", "local"], capsys)
