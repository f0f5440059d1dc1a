"""Tables from run folders: a compact per-block CSV and a Markdown summary of final metrics.

``bmr-jax report RUNS... [--csv FILE]`` prints one Markdown row per run (folder name, dataset,
network, preset, method, steps, ACC, ECE, NLL, pruned fraction, compression alive and by mask
(``bmr_jax.bmr.reduce``), wall time, and the wall time until 50 % and 90 % of the prunable
weights were pruned) and optionally
writes every run's per-block metrics as one CSV, the form committed under
``experiments/results/``. Unfinished runs are reported with the blocks they have.

``--records DIR`` also copies each run's record -- its marker, ``config.yaml``,
``metrics.jsonl`` and ``summary.json``, not its checkpoints or posterior -- to
``DIR/<dataset folder>/<run>``: a few kilobytes a run, small enough to commit, and still a run
folder that ``bmr-jax report`` and figures 1 and 2 of ``bmr-jax plot`` read.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from bmr_jax.bmr.reduce import COMPRESSIONS, record_compressions
from bmr_jax.results.records import METHOD_ORDER, NET_ORDER, Run, paper_rank
from bmr_jax.runs.folder import MARKER, RunFolder, atomic_write, block_seconds

RUN_COLUMNS = ("run", "dataset", "net", "preset", "method")
BLOCK_COLUMNS = ("block", "step", "loss", "acc", "nll", "ece", "lpd", "pruned_fraction",
                 "dead_fraction", *COMPRESSIONS, "seconds")  # fmt: skip
def load_runs(paths) -> list[tuple[dict, list[dict]]]:
    """``(identity, per-block records)`` of each run folder, in the paper's network and method
    order; ``identity`` holds ``RUN_COLUMNS``."""
    runs = []
    for path in paths:
        folder = RunFolder(path)
        config = folder.read_config()
        identity = {"run": folder.path.name, "dataset": config.data.name,
                    "net": config.net.name, "preset": config.net.preset,
                    "method": config.method}  # fmt: skip
        runs.append((identity, folder.metrics()))

    def key(run):
        identity = run[0]
        return (identity["dataset"], paper_rank(identity["net"], NET_ORDER), identity["preset"],
                paper_rank(identity["method"], METHOD_ORDER), identity["run"])  # fmt: skip

    return sorted(runs, key=key)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def per_block_csv(runs) -> str:
    """One CSV row per (run, block); test metrics of blocks without an evaluation are empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RUN_COLUMNS + BLOCK_COLUMNS)
    for identity, records in runs:
        for r in records:
            values = [identity[k] for k in RUN_COLUMNS]
            r = {**r, **record_compressions(r)}  # older records: ``compression``
            values += [r.get(k) for k in BLOCK_COLUMNS[:-1]] + [block_seconds(r)]
            writer.writerow([_cell(v) for v in values])
    return buffer.getvalue()


def _last(records, key):
    """The last recorded value of ``key`` (test metrics may be every k-th block)."""
    values = [r[key] for r in records if r.get(key) is not None]
    return values[-1] if values else None


def minutes_to_sparsity(records, fraction: float) -> float | None:
    """Wall minutes (training, reduce and evaluation) until the end of the first block whose
    pruned fraction reached ``fraction``; ``None`` if no block did (time-to-sparsity)."""
    seconds = 0.0
    for r in records:
        seconds += block_seconds(r)
        if r["pruned_fraction"] >= fraction:
            return seconds / 60
    return None


def summary_markdown(runs) -> str:
    """A Markdown table of each run's last metrics, total wall time and time-to-sparsity."""
    lines = [
        "| run | dataset | net | preset | method | steps | ACC | ECE | NLL | pruned "
        "| compression alive / by mask | minutes | min to 50 % / 90 % pruned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for identity, records in runs:
        if not records:
            continue
        minutes = sum(block_seconds(r) for r in records) / 60
        acc, ece, nll = (_last(records, k) for k in ("acc", "ece", "nll"))
        metrics = [f"{v:.3f}" if v is not None else "-" for v in (acc, ece, nll)]
        reached = [minutes_to_sparsity(records, f) for f in (0.5, 0.9)]
        reached = " / ".join(f"{m:.1f}" if m is not None else "-" for m in reached)
        counts = record_compressions(records[-1])
        compression = f"{counts['compression_alive']:.1f}x / {counts['compression_by_mask']:.1f}x"
        lines.append(
            f"| {identity['run']} | {identity['dataset']} | {identity['net']} "
            f"| {identity['preset']} "
            f"| {identity['method']} | {records[-1]['step']:,} | {' | '.join(metrics)} "
            f"| {records[-1]['pruned_fraction']:.3f} | {compression} "
            f"| {minutes:.1f} | {reached} |"
        )
    return "\n".join(lines) + "\n"


RECORD_FILES = (MARKER, "config.yaml", "metrics.jsonl", "summary.json", "speedup.json")


def save_records(paths, out_dir) -> list[Path]:
    """Copies the record of each run folder in ``paths`` (``RECORD_FILES``, those it has) to
    ``out_dir/<its parent's name>/<its name>``; returns the folders written. Each file is
    written atomically; a file the run no longer has is removed from its record."""
    written = []
    for path in paths:
        folder = RunFolder(path)
        folder.read_config()  # refuses a folder that is not a run's, naming it
        record = Path(out_dir) / folder.path.parent.name / folder.path.name
        for name in RECORD_FILES:
            source = folder.path / name
            if source.is_file():
                atomic_write(record / name, source.read_bytes())
            else:
                (record / name).unlink(missing_ok=True)
        written.append(record)
    return written


def report(paths, csv_path=None, records_dir=None, frontier: bool = False,
           speedup: bool = False) -> str:  # fmt: skip
    """The Markdown summary of ``paths`` (a row per run, or with ``frontier`` a row per
    frontier point: :func:`bmr_jax.results.frontier.frontier_table`, or with ``speedup`` a row
    per point of the structured frontier: :func:`bmr_jax.results.speedup.speedup_table`); writes
    the per-block CSV to ``csv_path`` and the runs' records to ``records_dir``
    (:func:`save_records`) if given."""
    runs = load_runs(paths) if csv_path is not None or not (frontier or speedup) else None
    if csv_path is not None:  # atomic_write creates its folder, or names why it cannot
        atomic_write(Path(csv_path), per_block_csv(runs).encode())
    if records_dir is not None:
        save_records(paths, records_dir)
    if speedup:
        from bmr_jax.results.speedup import speed_points, speedup_table

        return speedup_table(speed_points([Run(path) for path in paths]))
    if frontier:
        from bmr_jax.results.frontier import frontier_table, points

        return frontier_table(points([Run(path) for path in paths]))
    return summary_markdown(runs)
