"""The command line: demo, datasets, nets, and one-line errors with exit status 2."""

from __future__ import annotations

import shutil

from bmr_jax.cli import main


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


def test_datasets_list_and_verify(capsys, data_dir):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist_mini     4/4 files" in out and "cifar10        0/1 files" in out
    assert main(["datasets", "verify", "mnist", "fashion_mnist"]) == 0
    assert capsys.readouterr().out.count("ok ") == 8


def test_verify_reports_a_corrupt_file(capsys, data_dir, tmp_path):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-1])
    assert main(["datasets", "verify", "mnist", "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f"CORRUPT  {bad}: md5" in out and out.count("ok ") == 3


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
    assert list(medians) == ["adam", "flat_map", "flat_ff", "tiered_ff", "bmr_ss", "reduce"]
    assert all(isinstance(v, float) and 0 < v < 60 for v in medians.values())
