"""One experiment: a validated config run into a run folder, resuming if it was interrupted.

This is what ``bmr-jax run`` does (DESIGN.md's contract): ``DIR/config.yaml`` (resolved),
``DIR/metrics.jsonl`` (one line per block), ``DIR/summary.json`` at the end, and a checkpoint
after every block from which a second call continues.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from functools import partial
from pathlib import Path

from bmr_jax import data, methods, nets, parallel
from bmr_jax.config import Config, dump_config, same_config
from bmr_jax.errors import BmrJaxError
from bmr_jax.results import RunFolder, RunFolderError, block_seconds


class RunInterrupted(BmrJaxError):
    """SIGINT or SIGTERM stopped the run; its state is checkpointed and ``bmr-jax run``
    resumes it."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


@contextlib.contextmanager
def _stop_on_signals():
    """Within the block, SIGINT and SIGTERM set a flag (the run stops cleanly before its next
    step and checkpoints); a second SIGINT interrupts at once. Outside the main thread signals
    cannot be caught, so the run is simply not stoppable that way."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_experiment(
    config: Config,
    out: str | Path,
    *,
    data_dir=None,
    progress: bool = True,
    log=print,
    stop_after: int | None = None,
    force: bool = False,
) -> dict | None:
    """Runs (or resumes) ``config`` into ``out``; returns the summary, or ``None`` if it
    stopped early because of ``stop_after`` (a number of blocks to run in this call, used to
    test interruption).

    A folder holding another config's run is refused unless ``force`` (which clears it).
    Raises :class:`RunInterrupted` after SIGINT/SIGTERM (state checkpointed) and
    ``methods.NonFiniteError`` when the numerics fail (the last good checkpoint is kept).
    """
    folder = RunFolder(out)
    same = partial(same_config, config)
    try:
        folder.claim(dump_config(config), same=same)
    except RunFolderError:
        if not (
            force and folder.config_path.is_file() and not same(folder.config_path.read_text())
        ):
            raise
        log(f"{folder.path}: --force: clearing the run of a different config")
        folder.clear()
        folder.claim(dump_config(config), same=same)
    if folder.is_finished():
        log(f"{folder.path}: already finished")
        return folder.read_summary()
    spec = nets.get_net_spec(config.net.name)
    dataset = data.load(config.data.name, image_size=spec.image_size, data_dir=data_dir)
    setup = methods.build(
        methods.configured(
            config.method, inclusion_rate=config.bmr.inclusion_rate, prior=config.prior
        ),
        dataset,
        net=config.net.name,
        preset=config.net.preset,
        batch_size=config.train.batch_size,
        lr=config.train.lr,
        seed=config.seed,
        mesh=parallel.data_mesh() if config.train.data_parallel else None,
    )
    resume, records = None, []
    saved = folder.load_checkpoint(methods.initial_state(setup), log=log)
    if saved is not None:
        resume, records = saved
        where = f"block {resume.block}" + (f" and {resume.step} steps" if resume.step else "")
        log(f"{folder.path}: resuming after {where}/{config.train.blocks}")
    folder.write_metrics(records)  # drops lines written after the checkpoint
    start = time.perf_counter()
    done = {"blocks": 0}

    class _Stop(Exception):
        pass

    def on_block(record, state):
        records.append(record)
        folder.write_metrics(records)
        folder.save_checkpoint(state, records, keep=config.train.keep_checkpoints)
        tested = (
            f"acc {record['acc']:.4f} nll {record['nll']:.4f} ece {record['ece']:.4f} "
            if record["acc"] is not None
            else ""
        )
        log(
            f"block {record['block']}/{config.train.blocks}: loss {record['loss']:.4f} {tested}"
            f"pruned {record['pruned_fraction']:.3f} ({record['train_seconds']:.1f} s train, "
            f"{record['eval_seconds']:.1f} s eval)"
        )
        done["blocks"] += 1
        if stop_after is not None and done["blocks"] >= stop_after:
            raise _Stop

    with _stop_on_signals() as received:
        try:
            methods.run(
                setup,
                dataset,
                blocks=config.train.blocks,
                steps_per_block=config.train.steps_per_block,
                eval_samples=config.eval.samples,
                chunk_size=config.eval.chunk_size,
                eval_every=config.eval.every,
                warmup_blocks=config.bmr.warmup_blocks,
                seed=config.seed,
                progress=progress,
                on_block=on_block,
                resume=resume,
                should_stop=lambda: bool(received),
                on_nonfinite=config.train.on_nonfinite,
                rollback_factor=config.train.rollback_factor,
                max_rollbacks=config.train.max_rollbacks,
                log=log,
            )
        except _Stop:
            return None
        except methods.RunStopped as stopped:
            path = folder.save_checkpoint(stopped.state, records,
                                          keep=config.train.keep_checkpoints)  # fmt: skip
            name = signal.Signals(received[0]).name
            raise RunInterrupted(
                f"{folder.path}: {name}: stopped after {stopped.state.step} steps of block "
                f"{stopped.state.block + 1}; checkpoint {path.name} (run again to resume)",
                received[0],
            ) from None
    final = records[-1]
    summary = {
        "method": config.method,
        "dataset": config.data.name,
        "net": config.net.name,
        "preset": config.net.preset,
        "blocks": config.train.blocks,
        "steps": final["step"],
        **{
            k: final[k]
            for k in ("acc", "nll", "ece", "lpd", "pruned_fraction", "dead_fraction", "compression")
        },  # fmt: skip
        "parameters": sum(s.size for s in setup.bnet.view.layers),
        "seconds": sum(block_seconds(r) for r in records),
        "seconds_this_call": time.perf_counter() - start,
    }
    folder.save_posterior(_posterior_weights(setup), setup.masks)
    folder.write_summary(summary)
    folder.remove_checkpoints()
    return summary


def _posterior_weights(setup) -> dict:
    """Every Bayesian layer's weight matrix ``W = scale * gamma * Z`` at the posterior median
    of the guide (what figures 3 and 4 draw)."""
    import jax
    from numpyro import handlers

    from bmr_jax import bmr

    params = setup.trainer.params(setup.state)
    latents = setup.guide.median(params)
    gamma = bmr.gamma_from_masks(setup.masks)
    with handlers.seed(rng_seed=0), handlers.substitute(data={**params, **latents}):
        net_params = setup.bnet.network_params(gamma)
    matrices = jax.device_get(setup.bnet.view.matrices(net_params))  # (sorts the keys)
    return {s.name: matrices[s.name] for s in setup.bnet.view.layers if s.name in setup.masks}
