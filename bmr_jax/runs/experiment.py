"""One experiment: a validated config run into a run folder, resuming if it was interrupted.

This is what ``bmr-jax run`` does (DESIGN.md's contract): ``DIR/config.yaml`` (resolved),
``DIR/metrics.jsonl`` (one line per block), ``DIR/summary.json`` at the end, and a checkpoint
after every block from which a second call continues. A finished run keeps its final
checkpoint, so the same config with a larger ``train.blocks`` extends it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

from bmr_jax import data, methods, nets
from bmr_jax.bmr.reduce import COMPRESSIONS
from bmr_jax.errors import BmrJaxError, ConfigError
from bmr_jax.runs.config import Config, differing_keys, dump_config, from_dict
from bmr_jax.runs.config_files import load_yaml
from bmr_jax.runs.folder import RunFolder, RunFolderError, block_seconds
from bmr_jax.runs.tracking import Tracking

# keys that may differ from a folder's config without making it another run
EXTENDABLE = ("train.blocks", "train.keep_checkpoints", "tracking.tensorboard",
              "tracking.mlflow", "tracking.mlflow_experiment")


class RunInterrupted(BmrJaxError):
    """SIGINT or SIGTERM stopped the run; its state is checkpointed and ``bmr-jax run``
    resumes it."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT and SIGTERM set a flag: the run stops cleanly at the next block boundary or SVI
    step and checkpoints (an evaluation under way finishes first); a second SIGINT interrupts
    at once. Outside the main thread signals cannot be caught, so the run is simply not
    stoppable that way."""
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


def claim_folder(folder: RunFolder, config: Config, *, force: bool, log) -> None:
    """Makes ``folder`` hold a run of ``config``: new, the same run (to resume or extend: only
    the keys in ``EXTENDABLE`` may differ), or with ``force`` another config's run, cleared.
    Anything else is refused naming the keys that differ."""
    text = dump_config(config)
    old = folder.read_config_text()
    differ = [] if old is None else differing_keys(config, old)
    fewer = "train.blocks" in differ and from_dict(load_yaml(old)).train.blocks > \
        config.train.blocks  # fmt: skip
    if fewer or [k for k in differ if k not in EXTENDABLE]:
        if not force:
            what = (
                f"of more blocks than train.blocks={config.train.blocks}"
                if fewer and differ == ["train.blocks"]
                else f"whose config differs in {', '.join(differ)}"
            )
            raise RunFolderError(f"{folder.path}: holds a run {what}; choose another --out, or "
                                 "--force to delete that run's results and start anew")  # fmt: skip
        log(f"{folder.path}: --force: deleting the run of a different config")
        folder.clear()
    elif "train.blocks" in differ and config.train.lr_schedule != "constant":
        raise RunFolderError(f"{folder.path}: cannot change train.blocks of a run under "
                             f"train.lr_schedule={config.train.lr_schedule}: its decay is "
                             "spread over the run's steps, and the steps already taken "
                             "followed the old total (--force starts it anew)")  # fmt: skip
    elif "train.blocks" in differ and folder.is_finished():
        if not folder.checkpoints():
            raise RunFolderError(f"{folder.path}: cannot extend this finished run: its final "
                                 "checkpoint is gone (--force starts it anew)")  # fmt: skip
        log(f"{folder.path}: extending the finished run to {config.train.blocks} blocks")
        folder.summary_path.unlink()
    folder.claim(text)


def run_experiment(config: Config, out: str | Path, *, data_dir=None, progress: bool = True,
                   log=print, force: bool = False, on_event=None) -> dict:  # fmt: skip
    """Runs (or resumes, or extends) ``config`` into ``out``; returns the summary.

    A folder holding another config's run is refused unless ``force`` (which clears it).
    Raises :class:`RunInterrupted` after SIGINT/SIGTERM (state checkpointed) and
    ``methods.NonFiniteError`` when the numerics fail (the last good checkpoint is kept).
    ``on_event(name, block, step)`` is a test hook: the loop's events (``between``, ``step``,
    ``evaluate``) and ``metrics`` and ``checkpoint`` after each is written.
    """
    folder = RunFolder(out)
    # a new folder is written only once the data loads and the method builds: a bad data
    # folder or setting leaves nothing behind that would refuse the corrected command
    prepared = _prepare(config, data_dir) if folder.read_config_text() is None else None
    claim_folder(folder, config, force=force, log=log)
    if folder.is_finished():
        log(f"{folder.path}: already finished")
        return folder.read_summary()
    dataset, setup = prepared or _prepare(config, data_dir)
    log(_start_line(folder, config, setup))
    resume, records = _resume(folder, setup, config, log)
    folder.write_metrics(records)  # drops lines written after the checkpoint
    start = time.perf_counter()
    event = on_event or (lambda name, block, step: None)
    tracking = Tracking.for_run(config.tracking, folder, config.train.steps_per_block)
    tracking.start(config, records)

    def on_block(record, state, losses):
        records.append(record)
        folder.write_metrics(records)
        event("metrics", record["block"], 0)
        folder.save_checkpoint(state, records, keep=config.train.keep_checkpoints)
        event("checkpoint", record["block"], 0)
        tracking.block(record, losses)  # after the checkpoint: a resume never logs it again
        log(_block_line(record, config.train.blocks))

    try:
        with _stop_on_signals() as received:
            hooks = methods.RunHooks(progress, log, on_block, lambda: bool(received), on_event)
            try:
                methods.run(setup, dataset, evaluation=config.eval, resume=resume, hooks=hooks)
            except methods.RunStopped as stopped:
                raise _interrupted(folder, stopped.state, records, received, config) from None
        summary = _summary(config, setup, records, time.perf_counter() - start)
        folder.save_posterior(_posterior_weights(setup), setup.masks)
        folder.write_summary(summary)
        folder.remove_checkpoints(keep_final=True)
        tracking.finish(summary, folder)
    finally:
        tracking.close()
    return summary


def _prepare(config: Config, data_dir=None):
    """``(dataset, setup)`` of ``config``: its data loaded and its method built."""
    dataset = load_dataset(config, data_dir)
    return dataset, build_setup(config, dataset)


def build_setup(config: Config, dataset):
    """``config``'s method built on ``dataset`` (:func:`bmr_jax.methods.build`)."""
    return methods.build(config.method, dataset, net=config.net.name, preset=config.net.preset,
                         train=config.train, bmr=config.bmr, prior=config.prior,
                         prior_options=config.prior_options,
                         seed=config.seed, guide=config.guide)  # fmt: skip


def load_dataset(config: Config, data_dir=None):
    """The dataset a run of ``config`` trains and evaluates on (``data.*``; a ValueError of
    the loader is a ConfigError naming ``data.validation``)."""
    image_size = nets.get_net_spec(config.net.name).image_size
    try:
        return data.load(config.data.name, image_size=image_size, data_dir=data_dir,
                         padding=config.data.padding, validation=config.data.validation)
    except ValueError as e:
        raise ConfigError(f"data.validation: {e}") from None


def _start_line(folder: RunFolder, config: Config, setup) -> str:
    import jax

    devices = jax.devices()
    kind = f"{len(devices)} x {devices[0].device_kind}" if len(devices) > 1 else \
        devices[0].device_kind  # fmt: skip
    parameters = sum(s.size for s in setup.bnet.view.layers)
    line = (f"{folder.path}: {config.method} on {config.data.name}, {config.net.name} "
            f"({config.net.preset}, {parameters:,} parameters), {config.train.blocks} x "
            f"{config.train.steps_per_block} steps, {devices[0].platform} ({kind})")  # fmt: skip
    if config.guide.init == "paper" and setup.method.rule is not None:
        line += ("\nthe reference start (guide.init: paper) leaves few weights prunable in "
                 "the first blocks (the paper: LeNet-5 from about block 5, the MLP about 18): "
                 "'pruned 0.000' until then is expected (experiments/README.md)")
    return line


def _resume(folder: RunFolder, setup, config: Config, log):
    """``(state, records)`` of the folder's newest checkpoint, or ``(None, [])``."""
    saved = folder.load_checkpoint(methods.initial_state(setup), log=log)
    if saved is None:
        return None, []
    state, records = saved
    if state.step:
        log(f"{folder.path}: resuming block {state.block + 1} at step {state.step}")
    else:
        log(f"{folder.path}: resuming after block {state.block}/{config.train.blocks}")
    return state, records


def _block_line(record: dict, blocks: int) -> str:
    tested = (f"acc {record['acc']:.4f} nll {record['nll']:.4f} ece {record['ece']:.4f} "
              if record["acc"] is not None else "")  # fmt: skip
    return (f"block {record['block']}/{blocks}: loss {record['loss']:.4f} {tested}"
            f"pruned {record['pruned_fraction']:.3f} ({record['train_seconds']:.1f} s train, "
            f"{record['eval_seconds']:.1f} s eval)")  # fmt: skip


def _interrupted(folder: RunFolder, state, records, received, config) -> RunInterrupted:
    """Checkpoints the stopped state; the error that says where it stopped."""
    name = signal.Signals(received[0]).name if received else "stopped"
    if state.block == 0 and state.step == 0:
        where, saved = "before block 1", "nothing to resume"
    else:
        path = folder.save_checkpoint(state, records, keep=config.train.keep_checkpoints)
        where = (f"{state.step} steps of block {state.block + 1}" if state.step
                 else f"block {state.block}")  # fmt: skip
        saved = f"checkpoint {path.name}"
    message = f"{folder.path}: {name}: stopped after {where}; {saved} (run again to resume)"
    return RunInterrupted(message, received[0] if received else signal.SIGINT)


def _summary(config: Config, setup, records: list[dict], seconds_this_call: float) -> dict:
    final = records[-1]
    keys = ("acc", "nll", "ece", "lpd", "pruned_fraction", "dead_fraction", *COMPRESSIONS)
    return {
        "method": config.method,
        "dataset": config.data.name,
        "net": config.net.name,
        "preset": config.net.preset,
        "evaluated_on": "validation" if config.data.validation else "test",
        "blocks": config.train.blocks,
        "steps": final["step"],
        **{k: final[k] for k in keys},
        "parameters": sum(s.size for s in setup.bnet.view.layers),
        "seconds": sum(block_seconds(r) for r in records),
        "seconds_this_call": seconds_this_call,
    }


def _posterior_weights(setup) -> dict:
    """Every Bayesian layer's weight matrix ``W = scale * gamma * Z`` at the posterior median
    of the guide (what figures 3 and 4 draw), in the order of the forward pass."""
    import jax
    from numpyro import handlers

    params = setup.trainer.params(setup.state)
    latents = setup.guide.median(params)
    with handlers.seed(rng_seed=0), handlers.substitute(data={**params, **latents}):
        net_params = setup.bnet.network_params(setup.gamma)
    matrices = jax.device_get(setup.bnet.view.matrices(net_params))  # (sorts the keys)
    return {s.name: matrices[s.name] for s in setup.bnet.view.layers if s.name in setup.masks}
