"""The command line: demo, datasets, nets, and one-line errors with exit status 2."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from bmr_jax.cli import default_run_folder, main
from bmr_jax.runs.config import dump_config, load_config
from bmr_jax.runs.folder import MARKER, RunFolder

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
TINY = ["net.preset=small", "train.blocks=2", "train.steps_per_block=5"]
UNWRITABLE = ("folder", "read-only", "taken")


def unwritable(tmp_path: Path, kind: str, name: str = "out.csv") -> tuple[Path, tuple[str, ...]]:
    """``(path, reasons)``: a file ``path`` that cannot be written, also by root (whom chmod
    does not stop), and the operating system's possible reasons. ``folder``: its folder would
    have to be made inside a regular file; ``read-only``: its folder is read-only (chmod, or
    /sys for root); ``taken``: a folder of that name exists."""
    if kind == "folder":
        (tmp_path / "a-file").write_text("not a folder\n")
        return tmp_path / "a-file" / "sub" / name, (os.strerror(errno.ENOTDIR),)
    if kind == "taken":
        (tmp_path / name).mkdir()
        return tmp_path / name, (os.strerror(errno.EISDIR),)
    root = os.geteuid() == 0
    folder = Path("/sys") if root else tmp_path / "read-only"
    if not root:
        folder.mkdir()
        folder.chmod(0o555)
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            pytest.skip(f"{folder} is writable here")
    except OSError:
        pass
    return folder / name, tuple(os.strerror(e) for e in (errno.EACCES, errno.EPERM, errno.EROFS))


def make_unreadable(path: Path) -> None:
    """Makes ``path`` a file that exists but cannot be read, also by root: mode 000, or for
    root a link to /proc/self/mem (reading its start fails with an I/O error)."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    if not Path("/proc/self/mem").is_file():
        pytest.skip("no /proc/self/mem to stand in for an unreadable file")
    path.unlink()
    path.symlink_to("/proc/self/mem")


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` and its bytes (to check that nothing was changed or left)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_error_line(err: str, path: Path, reasons: tuple[str, ...], action: str) -> None:
    """``err`` is one line naming ``path``, ``action`` and one of ``reasons``, and no temporary
    file."""
    pattern = rf"bmr-jax: error: {re.escape(f'{path}: {action}')} \((.+)\)\n"
    match = re.fullmatch(pattern, err)
    assert match and match[1] in reasons, err
    assert f".{path.name}." not in err


def test_demo_runs_and_prints_test_accuracy(capsys):
    assert main(["demo", "--steps", "60", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "lenet5 (paper, 61,706 parameters) on mnist_mini" in out
    line = next(s for s in out.splitlines() if s.startswith("test accuracy:"))
    assert 0.5 < float(line.split()[2]) <= 1.0  # 60 steps: well above chance (0.1)


def test_unknown_dataset_exits_2_with_one_line(capsys):
    assert main(["demo", "--dataset", "imagenet", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'imagenet'" in err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--steps", "-5"], "argument --steps: must be >= 1, got -5"),
    (["demo", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["demo", "--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
    (["nets", "--classes", "0"], "argument --classes: must be >= 1, got 0"),
    (["nets", "--input-shape", "-1", "-1", "-1"], "argument --input-shape: must be >= 1, got -1"),
])  # fmt: skip
def test_bad_numbers_on_the_command_line_exit_2(argv, message, capsys):
    """Issue 38: these were tracebacks (or, for ``--lr nan``, a run with loss nan and exit 0);
    one error line, exit 2, nothing run."""
    with pytest.raises(SystemExit) as info:
        main([*argv, "--quiet"] if argv[0] == "demo" else argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_datasets_list_and_verify(capsys, data_dir, tmp_path):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")  # what shared/data holds may grow
    assert main(["datasets", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist_mini     4/4 files" in out and "cifar10        0/1 files" in out
    assert "mnist          4/4 files" in out
    assert main(["datasets", "verify", "mnist", "fashion_mnist"]) == 0
    assert capsys.readouterr().out.count("ok ") == 8


def test_verify_reports_a_corrupt_file(capsys, data_dir, tmp_path):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-1])
    assert main(["datasets", "verify", "mnist", "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f"CORRUPT  {bad}: md5" in out and out.count("ok ") == 3


def test_verify_a_named_missing_dataset_exits_2(capsys, data_dir, tmp_path):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    assert main(["datasets", "verify", "cifar10", "mnist", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"missing  {tmp_path / 'cifar10' / 'cifar-10-python.tar.gz'}"
    assert captured.out.count("ok ") == 4
    assert lines[-1] == "files: 4 verified, 0 corrupt, 1 missing"
    assert captured.err == (
        "bmr-jax: error: datasets verify: missing files in cifar10 "
        "(bmr-jax datasets download cifar10)\n"
    )


def test_verify_all_lists_missing_datasets_but_fails_only_on_corrupt_ones(
    capsys, data_dir, tmp_path
):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    assert main(["datasets", "verify", "--data-dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and f"missing  {tmp_path / 'fashion_mnist'}" in captured.out
    # mnist_mini (embedded) and mnist: 8; fashion_mnist 4, cifar10 1 and cifar100 1 missing
    assert captured.out.splitlines()[-1] == "files: 8 verified, 0 corrupt, 6 missing"
    bad = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-1])
    assert main(["datasets", "verify", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "files: 7 verified, 1 corrupt, 6 missing"
    assert captured.err == "bmr-jax: error: datasets verify: corrupt files in mnist\n"


def test_download_offline_exits_2(capsys, tmp_path):
    assert main(["datasets", "download", "fashion_mnist", "--data-dir", str(tmp_path)]) == 2
    assert "file is missing and downloads are off" in capsys.readouterr().err


def test_nets_lists_the_zoo(capsys):
    assert main(["nets"]) == 0
    out = capsys.readouterr().out
    assert "lenet5         paper      61,706" in out and "vit            paper   3,186,954" in out


def test_bench_step_prints_the_json_contract(capsys):
    import json

    args = ["bench", "step", "--net", "mlp", "--preset", "small", "--dataset", "mnist_mini",
            "--batch", "32", "--rounds", "3", "--json"]  # fmt: skip
    assert main(args) == 0
    medians = json.loads(capsys.readouterr().out)
    assert list(medians) == ["adam", "flat_map", "flat_ff", "flat_ff_local",
                             "flat_ff_local_dense", "tiered_ff", "bmr_ss", "reduce", "sparse_vd",
                             "ivon_bmr"]  # fmt: skip
    assert all(isinstance(v, float) and 0 < v < 60 for v in medians.values())


@pytest.mark.parametrize("kind", ["folder", "read-only"])
def test_run_into_an_unwritable_folder_exits_2(kind, tmp_path, capsys):
    target, reasons = unwritable(tmp_path, kind, "run")
    before = files_under(tmp_path)
    assert main(["run", QUICKSTART, *TINY, "--out", str(target), "--quiet"]) == 2
    one_error_line(capsys.readouterr().err, target / MARKER, reasons,
                   f"cannot create folder {target}")  # fmt: skip
    assert files_under(tmp_path) == before


def test_an_os_error_not_caught_elsewhere_is_one_line(tmp_path, capsys):
    run = tmp_path / ("x" * 300)  # longer than a file name may be: stat() fails
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == f"bmr-jax: error: {run / 'config.yaml'}: {os.strerror(errno.ENAMETOOLONG)}\n"


def _finished_run(folder: Path, summary: bytes) -> Path:
    """A run folder of quickstart + TINY that looks finished, with ``summary`` as its
    summary.json."""
    run = RunFolder(folder)
    run.claim(dump_config(load_config(QUICKSTART, TINY)))
    run.write_metrics([{"block": 1, "step": 5}, {"block": 2, "step": 10}])
    run.summary_path.write_bytes(summary)
    return folder


@pytest.mark.parametrize(
    "summary, problem",
    [
        (
            b'{"acc": 0.9, "nll',
            "not valid JSON (Unterminated string starting at: line 1 column 14)",
        ),
        (b"\x80\x81", "not valid JSON (not UTF-8 text)"),
        (b"[0.9]", "not a JSON object"),
    ],
)
def test_a_corrupt_summary_exits_2(summary, problem, tmp_path, capsys):
    folder = _finished_run(tmp_path / "run", summary)
    before = files_under(tmp_path)
    assert main(["run", QUICKSTART, *TINY, "--out", str(folder), "--quiet"]) == 2
    assert capsys.readouterr().err == f"bmr-jax: error: {folder / 'summary.json'}: {problem}\n"
    assert files_under(tmp_path) == before


def test_default_run_folder_is_one_per_set_of_overrides():
    def name(*overrides):
        folder = default_run_folder(QUICKSTART, list(overrides))
        assert folder.parent == Path("runs") and len(folder.name.encode()) <= 255
        return folder.name

    assert name("seed=1", "train.blocks=3") == "quickstart,seed=1,train.blocks=3"
    assert name("seed=1") == name("seed=1") != name("seed=2") != name()
    assert name("seed=1", "train.blocks=3") != name("train.blocks=3", "seed=1")  # order kept
    assert name("data.name=a/b") == "quickstart,data.name=a%2Fb"  # one folder, not two
    assert len({name("x=a/b"), name("x=a_b"), name("x=a%2Fb"), name("x=a b")}) == 4
    assert name("x=1,y=2") != name("x=1", "y=2")
    many = [f"train.option_number_{i}=value_{i}" for i in range(20)]
    assert name(*many) == name(*many) != name(*many[:-1], "train.option_number_19=other")


def test_run_without_out_prints_its_own_folder_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "no-data"  # the run stops at its data (offline in the tests), before
    empty.mkdir()  # writing its folder
    empty, folders = str(empty), []
    for seed in ("5", "6"):
        args = ["run", QUICKSTART, "data.name=fashion_mnist", f"seed={seed}", "--quiet"]
        assert main([*args, "--data-dir", empty]) == 2
        first = capsys.readouterr().out.splitlines()[0]
        assert first == f"run folder: runs/quickstart,data.name=fashion_mnist,seed={seed}"
        folders.append(tmp_path / first.removeprefix("run folder: "))
    assert not folders[0].exists() and not folders[1].exists()  # nothing left to refuse a rerun
