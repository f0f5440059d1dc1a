"""`bmr-jax report`: the per-block CSV and the Markdown summary, on hand-made run folders."""

from __future__ import annotations

import csv

from bmr_jax.cli import main
from bmr_jax.config import dump_config, from_dict
from bmr_jax.report import BLOCK_COLUMNS, RUN_COLUMNS
from bmr_jax.results import MARKER, RunFolder


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
            "lpd": None, "pruned_fraction": 0.25 * (block - 1), "dead_fraction": 0.0,
            "compression": 1 / (1 - 0.25 * (block - 1)), "train_seconds": 50.0,
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
                        "| 0.500 | 2.0x | 2.8 | 2.8 / - |")  # fmt: skip
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
    assert float(rows[5]["compression"]) == 2.0


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and err.count("\n") == 1
