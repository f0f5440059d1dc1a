"""Run records (``bmr-jax report --records``) rebuilt from a committed per-block CSV, for runs
whose folders were lost (a session's machine does not keep ``/work/runs``).

Usage::

    python scripts/records_from_csv.py CSV GRID... --out DIR

For every member of the grids whose run name (its folder's name) is a ``run`` of the CSV, this
writes ``DIR/<dataset folder>/<run>/``: the marker, the resolved config the grid gives that
member, ``metrics.jsonl`` with one record per CSV row -- the CSV's columns only (no per-layer
fractions, no learning rate; ``seconds`` is the block's whole wall time), empty cells as
``null`` -- and, for a run whose rows reach its last block, a ``summary.json`` of its final
metrics with ``"rebuilt_from"`` naming the CSV. A run whose rows stop early stays
unfinished. The records are what ``bmr-jax plot --figure 1/2`` and ``bmr-jax report`` read;
a record that already exists is left alone unless ``--force``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

from bmr_jax.results.report import BLOCK_COLUMNS
from bmr_jax.runs.config import dump_config
from bmr_jax.runs.folder import MARKER, RunFolder, atomic_write
from bmr_jax.runs.grid import load_grid

INTEGER_COLUMNS = ("block", "step")
FINAL_KEYS = ("acc", "nll", "ece", "lpd", "pruned_fraction", "dead_fraction", "compression")


def records_of(rows: list[dict]) -> list[dict]:
    """The metrics records of one run's CSV rows (every metric column, ``None`` where empty)."""
    records = []
    for row in rows:
        record = {}
        for key in BLOCK_COLUMNS:
            text = row.get(key, "")
            if key in INTEGER_COLUMNS:
                record[key] = int(text)
            else:
                record[key] = float(text) if text != "" else None
        records.append(record)
    return sorted(records, key=lambda r: r["block"])


def summary_of(config, records: list[dict], csv_path: Path) -> dict:
    """What ``summary.json`` holds that the CSV can give: the last evaluated metrics."""
    last = {k: next((r[k] for r in reversed(records) if r[k] is not None), None)
            for k in FINAL_KEYS}  # fmt: skip
    return {"method": config.method, "dataset": config.data.name, "net": config.net.name,
            "preset": config.net.preset, "blocks": config.train.blocks,
            "steps": records[-1]["step"], **last,
            "seconds": sum(r["seconds"] for r in records),
            "rebuilt_from": str(csv_path)}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("grids", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--force", action="store_true", help="replace records already there")
    args = parser.parse_args(argv)
    with open(args.csv, newline="") as f:
        rows = defaultdict(list)
        for row in csv.DictReader(f):
            rows[row["run"]].append(row)
    members = {run.out.name: run for grid in args.grids for run in load_grid(grid)}
    for name in sorted(rows):
        member = members.get(name)
        if member is None:
            print(f"{name}: in no grid given, skipped")
            continue
        record = RunFolder(args.out / member.out.parent.name / name)
        if record.config_path.exists() and not args.force:
            print(f"{record.path}: exists, left alone")
            continue
        records = records_of(rows[name])
        atomic_write(record.path / MARKER, b"bmr-jax run folder\n")
        atomic_write(record.config_path, dump_config(member.config).encode())
        record.write_metrics(records)
        finished = records[-1]["block"] == member.config.train.blocks
        if finished:
            record.write_summary(summary_of(member.config, records, args.csv))
        else:  # --force over a finished record: it is unfinished now
            record.summary_path.unlink(missing_ok=True)
        state = "finished" if finished else f"unfinished, {len(records)} blocks"
        print(f"{record.path}: {len(records)} blocks ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
