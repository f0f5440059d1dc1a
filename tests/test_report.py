"""`bmr-jax report`: the per-block CSV and the Markdown summary, on hand-made run folders."""

from __future__ import annotations

import csv

import pytest

from bmr_jax.cli import main
from bmr_jax.results.report import BLOCK_COLUMNS, RUN_COLUMNS
from bmr_jax.runs.config import dump_config, from_dict
from bmr_jax.runs.folder import MARKER, RunFolder
from tests.test_cli import UNWRITABLE, files_under, make_unreadable, one_error_line, unwritable


def _run(root, net, method, acc_last):
    folder = RunFolder(root / f"{net}-{method}")
    folder.path.mkdir(parents=True)
    (folder.path / MARKER).write_text("bmr-jax run folder\n")
    config = from_dict({"method": method, "data": {"name": "fashion_mnist"}, "net": {"name": net}})
    folder.config_path.write_text(dump_config(config))
    for block, acc in ((1, 0.5), (2, None), (3, acc_last)):  # block 2 was not evaluated
        folder.append_metrics({
            "block": block, "step": 500 * block, "loss": 1.0 / block, "acc": acc,
            "nll": None if acc is None else 1 - acc, "ece": None if acc is None else 0.01,
            "lpd": None, "pruned_fraction": 0.25 * (block - 1),
            "dead_fraction": 0.375 * (block - 1),  # dead units: 4x alive, 2x by mask at the end
            "compression": 1 / (1 - 0.375 * (block - 1)),  # a record older than the counts
            "train_seconds": 50.0,
            "reduce_seconds": 0.5, "eval_seconds": 9.5 if acc is not None else 0.0,
        })  # fmt: skip
    return folder.path


def test_csv_and_markdown_from_run_folders(tmp_path, capsys):
    runs = [_run(tmp_path, "lenet5", "bmr_ss", 0.9), _run(tmp_path, "mlp", "flat_ff", 0.8)]
    out = tmp_path / "results" / "blocks.csv"
    assert main(["report", *map(str, runs), "--csv", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    # paper order: MLP first; last evaluated metrics; 3 x 50.5 s + 2 x 9.5 s = 170.5 s = 2.8 min
    assert table[2] == ("| mlp-flat_ff | fashion_mnist | mlp | paper | flat_ff | 1,500 | 0.800 "
                        "| 0.010 | 0.200 "
                        "| 0.500 | 4.0x / 2.0x | 2.8 | 2.8 / - |")  # fmt: skip
    assert table[3].startswith(
        "| lenet5-bmr_ss | fashion_mnist | lenet5 | paper | bmr_ss | 1,500 | 0.900 |"
    )
    # pruned 0.5 is first reached after block 3 (170.5 s); 0.9 never
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(RUN_COLUMNS + BLOCK_COLUMNS)
    assert [(r["net"], r["block"]) for r in rows] == [
        ("mlp", "1"),
        ("mlp", "2"),
        ("mlp", "3"),
        ("lenet5", "1"),
        ("lenet5", "2"),
        ("lenet5", "3"),
    ]
    assert rows[1]["acc"] == "" and rows[1]["seconds"] == "50.5" and rows[2]["acc"] == "0.8"
    # the older record's ``compression`` is the alive count; by mask follows from the pruned
    # fraction; the weight count needs the masks, which an older record does not have
    assert float(rows[5]["compression_alive"]) == 4.0
    assert float(rows[5]["compression_by_mask"]) == 2.0
    assert rows[5]["weight_compression_by_mask"] == ""


def test_records_are_run_folders_without_checkpoints(tmp_path, capsys):
    runs = [_run(tmp_path / "runs" / "fashion_mnist", "mlp", "flat_ff", 0.8),
            _run(tmp_path / "runs" / "fashion_mnist", "lenet5", "bmr_ss", 0.9)]  # fmt: skip
    (runs[0] / "summary.json").write_text('{"acc": 0.8}\n')
    (runs[0] / "checkpoints").mkdir()
    (runs[0] / "checkpoints" / "block-000003.npz").write_bytes(b"state")
    (runs[0] / "posterior.npz").write_bytes(b"weights")
    records = tmp_path / "records"
    assert main(["report", *map(str, runs), "--records", str(records)]) == 0
    whole = capsys.readouterr().out
    kept = {p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file()}
    assert kept == {f"fashion_mnist/{run}/{name}"
                    for run, names in (("mlp-flat_ff", (MARKER, "config.yaml", "metrics.jsonl",
                                                        "summary.json")),
                                       ("lenet5-bmr_ss", (MARKER, "config.yaml",
                                                          "metrics.jsonl")))
                    for name in names}  # fmt: skip
    for run in runs:
        for name in (MARKER, "config.yaml", "metrics.jsonl"):
            copy = records / "fashion_mnist" / run.name / name
            assert copy.read_bytes() == (run / name).read_bytes()
    # a record reports as its run does, and is a run folder for figures 1 and 2
    copies = [records / "fashion_mnist" / run.name for run in runs]
    assert main(["report", *map(str, copies)]) == 0
    assert capsys.readouterr().out == whole.replace(f"run records: {records}\n", "")
    assert main(["plot", *map(str, copies), "--figure", "2", "--out", str(tmp_path / "f2")]) == 0
    assert (tmp_path / "f2.png").stat().st_size > 10_000
    # a run that lost its summary (continued past its end) loses it in its record too
    (runs[0] / "summary.json").unlink()
    assert main(["report", str(runs[0]), "--records", str(records)]) == 0
    assert not (copies[0] / "summary.json").exists()


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", UNWRITABLE)
def test_report_csv_into_an_unwritable_folder_exits_2(kind, tmp_path, capsys):
    run = _run(tmp_path / "runs", "mlp", "flat_ff", 0.8)
    target, reasons = unwritable(tmp_path, kind, "blocks.csv")
    before = files_under(tmp_path)
    assert main(["report", str(run), "--csv", str(target)]) == 2
    action = f"cannot create folder {target.parent}" if kind == "folder" else "cannot write"
    one_error_line(capsys.readouterr().err, target, reasons, action)
    assert files_under(tmp_path) == before  # the runs, and no temporary file left


@pytest.mark.parametrize(
    "corrupt, problem",
    [
        (  # cut off in the middle of block 3
            lambda b: b"".join(b.splitlines(keepends=True)[:2]) + b'{"block": 3, "st',
            "line 3 is not valid JSON (Unterminated string starting at: column 14)",
        ),
        (lambda b: b + b"\x80\n", "line 4 is not valid JSON (not UTF-8 text)"),
        (lambda b: b + b"\n[4]\n", "line 5 is not a JSON object"),
    ],
)
def test_report_of_a_corrupt_metrics_file_exits_2(corrupt, problem, tmp_path, capsys):
    run = _run(tmp_path, "mlp", "flat_ff", 0.8)
    metrics = run / "metrics.jsonl"
    metrics.write_bytes(corrupt(metrics.read_bytes()))
    before = files_under(tmp_path)
    assert main(["report", str(run), "--csv", str(tmp_path / "blocks.csv")]) == 2
    assert capsys.readouterr().err == f"bmr-jax: error: {metrics}: {problem}\n"
    assert files_under(tmp_path) == before  # no CSV


@pytest.mark.parametrize(
    "text, problem",
    [
        (b"method: [bmr_ss\n", "not valid YAML (while parsing a flow sequence)"),
        (b"\xff\x00\x80", "not valid YAML (unacceptable character #x00ff: invalid start byte)"),
        (b"- bmr_ss\n", "not a mapping of config keys"),
        (b"method: bmr_ss\nnet: {name: ml", "not valid YAML (while parsing a flow mapping)"),
        (b"method: bmr_ss\nnet: {name: ml}\n", "net.name: unknown value 'ml'; allowed: "),
        (None, "cannot read ("),
    ],
)
def test_report_of_a_corrupt_config_exits_2(text, problem, tmp_path, capsys):
    run = _run(tmp_path, "mlp", "flat_ff", 0.8)
    config = run / "config.yaml"
    if text is None:
        make_unreadable(config)
    else:
        config.write_bytes(text)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bmr-jax: error: {config}: {problem}") and err.count("\n") == 1
