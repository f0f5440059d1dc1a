"""The ``bmr-jax`` command line.

    bmr-jax run CONFIG [k=v ...]      run or resume an experiment into a run folder
    bmr-jax grid GRID [k=v ...]       run a grid of experiments, skipping finished runs
    bmr-jax plot RUNS... --figure N --out FILE   draw figure N (1-4) of the paper
    bmr-jax bench step --net NAME     each method's step and the BMR reduce vs an Adam step
    bmr-jax report RUNS... [--csv F]  final metrics as a Markdown table; per-block CSV
    bmr-jax demo                      train a LeNet-5 on the embedded mnist_mini, print accuracy
    bmr-jax datasets list             registered datasets and whether their files are present
    bmr-jax datasets download NAME    download (and verify) a dataset's files
    bmr-jax datasets verify [NAME..]  check dataset files against their published MD5s
    bmr-jax nets                      the model zoo with presets and parameter counts
    bmr-jax export RUN --out DIR      the run's network without its unused units, saved

Errors caused by the input (unknown names, missing or corrupt files, an output file that
cannot be written) exit with status 2 and one line on stderr naming the problem. A run stopped
by SIGINT/SIGTERM checkpoints and exits with 130/143 (run it again to resume); a run whose
numerics fail (NaN/inf) exits with 3.

``run`` without ``--out`` writes to ``runs/<config path>[,key=value...]`` (one folder per set of
overrides) and prints the run folder first. ``datasets verify NAME...`` exits with 2 when a
named dataset has a missing or corrupt file; ``datasets verify`` (every registered dataset)
lists missing files without failing (most users never download every dataset) but exits with 2
on a corrupt one. Both end with a one-line count.
"""

from __future__ import annotations

import sys

from bmr_jax.cli.commands import default_run_folder
from bmr_jax.cli.parser import build_parser
from bmr_jax.errors import BmrJaxError

__all__ = ["build_parser", "default_run_folder", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `run` takes key=value overrides anywhere after the config, also after its options
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if extra != overrides or (overrides and args.command not in ("run", "grid")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    from bmr_jax.methods import NonFiniteError
    from bmr_jax.runs.experiment import RunInterrupted

    try:
        return args.func(args)
    except RunInterrupted as e:  # checkpointed: 128 + the signal, as a shell reports it
        print(f"bmr-jax: {e}", file=sys.stderr)
        return e.exit_code
    except NonFiniteError as e:  # the numerics failed, not the input
        print(f"bmr-jax: error: {e}", file=sys.stderr)
        return 3
    except BmrJaxError as e:
        print(f"bmr-jax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # last resort: a file operation not yet turned into a BmrJaxError
        print(f"bmr-jax: error: {_os_error_line(e)}", file=sys.stderr)
        return 2


def _os_error_line(e: OSError) -> str:
    """``<filename>: <reason>`` of ``e`` on one line."""
    reason = e.strerror or str(e) or type(e).__name__
    line = f"{e.filename}: {reason}" if e.filename is not None else reason
    return line.replace("\r", "\\r").replace("\n", "\\n")
