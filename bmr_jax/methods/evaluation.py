"""The block loop's test evaluation (METHOD.md 5): the posterior predictive on the test set
(or the validation split) after every ``eval.every``-th block and the last, on the network
without the units the masks leave unused (``eval.shrink``), and with ``eval.mean_network``
the deterministic masked network beside it. Block ``b`` draws its samples from
``fold_in(block_key, b)`` (:func:`bmr_jax.methods.loop.run_keys`)."""

from __future__ import annotations

import functools

import jax

from bmr_jax.inference import evaluate, shrunk
from bmr_jax.methods.settings import EvalSettings
from bmr_jax.methods.setup import Setup


def make_evaluation(setup: Setup, dataset, evaluation: EvalSettings, progress: bool,
                    block_key: jax.Array):  # fmt: skip
    """``evaluate(state, masks, gamma, block) -> {acc, nll, ece, lpd}`` (``None`` values for
    the blocks that are not evaluated), compiled once per set of kept units."""
    samples = evaluation.samples or setup.method.eval_samples
    predictive_for = _predictives(setup, dataset, evaluation)
    mean_network = evaluate.make_predictive(setup.bnet, setup.guide, setup.trainer.mesh,
                                            point=True) if evaluation.mean_network else None

    def evaluate_block(state, masks, gamma, block):
        if block % evaluation.every and block != setup.train.blocks:
            names = evaluate.CLASSIFICATION_METRICS
            if mean_network is not None:
                names += tuple(f"mean_{k}" for k in names)
            return dict.fromkeys(names)
        key = jax.random.split(jax.random.fold_in(block_key, block))[1]
        predictive, chunk_size = predictive_for(masks)
        params = setup.trainer.params(state)
        probs = evaluate.predictive_probs(
            setup.bnet, setup.guide, params, dataset.test.images, key=key,
            samples=samples, gamma=gamma, chunk_size=chunk_size, predictive=predictive,
            progress=progress, description=f"evaluate {block}",
        )  # fmt: skip
        out = evaluate.classification_metrics(probs, dataset.test.labels)
        if mean_network is not None:  # the deterministic masked network (eval.mean_network)
            probs = evaluate.predictive_probs(
                setup.bnet, setup.guide, params, dataset.test.images, key=key, samples=1,
                gamma=gamma, chunk_size=evaluation.chunk_size, predictive=mean_network)
            mean = evaluate.classification_metrics(probs, dataset.test.labels)
            out.update({f"mean_{k}": v for k, v in mean.items()})
        return out

    return evaluate_block


def _predictives(setup: Setup, dataset, evaluation: EvalSettings):
    """``predictive_for(masks) -> (predictive, chunk_size)``: the compiled predictive of the
    full network, or with ``evaluation.shrink`` of the network without the units ``masks``
    leave unused (:mod:`bmr_jax.inference.shrunk`), compiled once per network shape: the
    kept units are padded to the rungs of a ladder, so that masks of nearby sizes share one.

    The network is shrunk only once that halves its FLOPs (``shrunk.WORTH``: each new
    shape costs a compilation), and its chunks are larger
    (:func:`bmr_jax.inference.shrunk.chunk_size`)."""
    full = evaluate.make_predictive(setup.bnet, setup.guide, setup.trainer.mesh)
    links = shrunk.links_of(setup.bnet, sequential=setup.sequential) if evaluation.shrink else []
    compiled: dict = {}

    def predictive_for(masks):
        if not evaluation.shrink:
            return full, evaluation.chunk_size
        kept = shrunk.kept_units(setup.bnet, jax.device_get(masks), links, worth=shrunk.WORTH)
        if kept is None:
            return full, evaluation.chunk_size
        shape = shrunk.shape_of(kept)
        if shape not in compiled:
            if len(compiled) >= 4:  # shapes only shrink as a run prunes: drop the oldest
                compiled.pop(next(iter(compiled)))
            apply = shrunk.shrunk_apply(setup.bnet, shape, dataset.image_shape)
            compiled[shape] = evaluate.make_predictive(setup.bnet, setup.guide,
                                                       setup.trainer.mesh, apply=apply)
        predictive = functools.partial(compiled[shape], aux=shrunk.index_arrays(kept))
        return predictive, shrunk.chunk_size(setup.bnet, kept, evaluation.chunk_size)

    return predictive_for
