"""One experiment: a validated config run into a run folder, resuming if it was interrupted.

This is what ``bmr-jax run`` does (DESIGN.md's contract): ``DIR/config.yaml`` (resolved),
``DIR/metrics.jsonl`` (one line per block), ``DIR/summary.json`` at the end, and a checkpoint
after every block from which a second call continues.
"""

from __future__ import annotations

import time
from pathlib import Path

from bmr_jax import data, methods, nets
from bmr_jax.config import Config, dump_config, same_config
from bmr_jax.results import RunFolder


def run_experiment(
    config: Config,
    out: str | Path,
    *,
    data_dir=None,
    progress: bool = True,
    log=print,
    stop_after: int | None = None,
) -> dict | None:
    """Runs (or resumes) ``config`` into ``out``; returns the summary, or ``None`` if it
    stopped early because of ``stop_after`` (a number of blocks to run in this call, used to
    test interruption)."""
    folder = RunFolder(out)
    folder.claim(dump_config(config), same=lambda old: same_config(config, old))
    if folder.is_finished():
        log(f"{folder.path}: already finished")
        return folder.read_summary()
    spec = nets.get_net_spec(config.net.name)
    dataset = data.load(config.data.name, image_size=spec.image_size, data_dir=data_dir)
    setup = methods.build(
        methods.configured(config.method, inclusion_rate=config.bmr.inclusion_rate),
        dataset,
        net=config.net.name,
        preset=config.net.preset,
        batch_size=config.train.batch_size,
        lr=config.train.lr,
        seed=config.seed,
    )
    resume = None
    if folder.checkpoint_path.is_file():
        resume = folder.load_checkpoint(methods.initial_state(setup))
        folder.truncate_metrics(resume.block)
        log(f"{folder.path}: resuming after block {resume.block}/{config.train.blocks}")
    start = time.perf_counter()
    done = {"blocks": 0}

    class _Stop(Exception):
        pass

    def on_block(record, state):
        folder.append_metrics(record)  # metrics first: a crash here is truncated on resume
        folder.save_checkpoint(state)
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

    try:
        methods.run(
            setup,
            dataset,
            blocks=config.train.blocks,
            steps_per_block=config.train.steps_per_block,
            eval_samples=config.eval.samples,
            chunk_size=config.eval.chunk_size,
            eval_every=config.eval.every,
            seed=config.seed,
            progress=progress,
            on_block=on_block,
            resume=resume,
        )
    except _Stop:
        return None
    records = folder.metrics()
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
        "seconds": sum(
            r["train_seconds"] + r["reduce_seconds"] + r["eval_seconds"] for r in records
        ),  # fmt: skip
        "seconds_this_call": time.perf_counter() - start,
    }
    folder.save_posterior(_posterior_weights(setup), setup.masks)
    folder.write_summary(summary)
    folder.path.joinpath("checkpoint.npz").unlink(missing_ok=True)
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
    matrices = setup.bnet.view.matrices(net_params)
    return {k: v for k, v in jax.device_get(matrices).items() if k in setup.masks}
