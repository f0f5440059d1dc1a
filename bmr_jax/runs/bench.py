"""Step-cost benchmark: every method's SVI step and the BMR reduce against a plain Adam step.

``bmr-jax bench step --net NAME [--preset P] [--batch B] [--json]`` (DESIGN.md contract). In one
process, on the same Flax network, dataset and batch size:

- ``adam``: one plain Optax Adam step on the Flax network (``bmr_jax.inference.baseline``);
- ``flat_map``, ``flat_ff``, ``tiered_ff``, ``bmr_ss``, ``sparse_vd``: one SVI step of each
  method through our engine (``SVITrainer.step``), all without dropout so only the inference
  differs (Sparse VD with its own local estimator);
- ``flat_ff_local``: the Flat-FF step with the local reparameterisation estimator
  (``guide.estimator: local``, :mod:`bmr_jax.bayes.local`), and ``flat_ff_local_dense`` with
  it on the dense layers only (``local_dense``);
- ``ivon_bmr``: one IVON step (:mod:`bmr_jax.inference.ivon_trainer`);
- with ``structured``, the structured methods too (issue 36): ``bmr_multipliers`` and ``bmrs``
  (a multiplier per unit: one more latent of the units' size), ``bmr_units`` (the matrix-normal
  guide), and ``reduce_groups`` and ``reduce_multipliers``, their whole between-blocks steps
  (``bmr_group`` trains exactly as ``bmr_ss``: the same prior and guide);
- ``reduce``: one whole BMR-S&S between-blocks step (read the guide out of the training
  state, Delta F of every weight, spike-and-slab rule, masks; METHOD.md 4.4-4.5) as one
  jitted call.

Everything is compiled and warmed up first, then timed round-robin (one call of each per round,
so drift and contention hit all alike); the medians over rounds are reported in seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

STEP_METHODS = ("flat_map", "flat_ff", "flat_ff_local", "flat_ff_local_dense", "tiered_ff",
                "bmr_ss", "sparse_vd", "ivon_bmr")  # fmt: skip
STRUCTURED_METHODS = ("bmr_multipliers", "bmrs", "bmr_units", "bmr_group")
ESTIMATOR_SUFFIXES = {"_local_dense": "local_dense", "_local": "local"}  # name -> estimator


def adam_runner(net: str, preset: str, dataset, batch: int) -> Callable[[int], object]:
    """``run(i)``: one plain Optax Adam step of a fresh ``net`` on batch ``i`` of ``dataset``
    (the reference every step ratio is taken against); returns the loss."""
    import jax
    import optax
    from flax import nnx

    from bmr_jax import nets
    from bmr_jax.inference import baseline

    module = nets.create_net(net, dataset.num_classes, dataset.image_shape, preset,
                             rngs=nnx.Rngs(0))  # fmt: skip
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    adam = optax.adam(1e-3)
    step = baseline.make_train_step(graphdef, adam)
    images, labels = jax.device_put(dataset.train.images), jax.device_put(dataset.train.labels)
    usable = (len(dataset.train) // batch) * batch
    order = jax.random.permutation(jax.random.key(0), usable).reshape(-1, batch)
    box = [baseline.TrainState(params, rest, adam.init(params))]

    def run(i):
        box[0], loss = step(box[0], images, labels, order, i % len(order))
        return loss

    return run


def _svi_runners(name: str, net: str, preset: str, dataset, batch: int, with_reduce: bool):
    import dataclasses

    import jax

    from bmr_jax import methods

    suffix = next((s for s in ESTIMATOR_SUFFIXES if name.endswith(s)), "")
    reference = methods.METHODS.get(name.removesuffix(suffix) if suffix else name)
    # the same network for every method (dropout off), so only the inference differs
    method = dataclasses.replace(reference, dropout=0.0)
    guide = methods.GuideSettings(estimator=ESTIMATOR_SUFFIXES.get(suffix))
    setup = methods.build(method, dataset, net=net, preset=preset, guide=guide,
                          train=methods.TrainSettings(batch_size=batch))  # fmt: skip
    trainer, gamma = setup.trainer, setup.bnet.full_gamma()
    box = [methods.initial_state(setup)]
    key = jax.random.key(0)

    def step(i):
        train, loss = trainer.step(jax.random.fold_in(key, i), box[0].train, gamma, i)
        box[0] = box[0]._replace(train=train)
        return loss

    runners = {name: step} if name != "bmr_group" else {}  # bmr_group's step is bmr_ss's
    if with_reduce:

        def reduce(i):
            state = box[0]
            return jax.block_until_ready(setup.between(state.train, state.masks, state.gamma,
                                                       2, key)[1])  # fmt: skip

        runners[{"bmr_ss": "reduce"}.get(name, f"reduce_{setup.method.between}")] = reduce
    return runners


def bench_step(
    net: str = "lenet5",
    *,
    preset: str = "paper",
    batch: int = 120,
    dataset: str = "fashion_mnist",
    rounds: int = 100,
    warmup: int = 3,
    data_dir=None,
    structured: bool = False,
) -> dict[str, float]:
    """Median seconds per call of ``adam``, each of ``STEP_METHODS`` and ``reduce`` (and, with
    ``structured``, of ``STRUCTURED_METHODS`` and their reduce steps)."""
    from bmr_jax import data, nets

    ds = data.load(dataset, image_size=nets.get_net_spec(net).image_size, data_dir=data_dir)
    runners = {"adam": adam_runner(net, preset, ds, batch)}
    names = STEP_METHODS + (STRUCTURED_METHODS if structured else ())
    for name in names:
        with_reduce = name in ("bmr_ss", "bmr_group", "bmr_multipliers")
        runners.update(_svi_runners(name, net, preset, ds, batch, with_reduce=with_reduce))
    return time_round_robin(runners, rounds, warmup)


def time_round_robin(
    runners: dict[str, Callable[[int], object]], rounds: int, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each ``run(i)``: every runner is compiled and warmed up
    first, then timed one call of each per round, so drift and contention hit all alike."""
    import jax

    for run in runners.values():
        for i in range(warmup):
            jax.block_until_ready(run(i))
    times = {name: [] for name in runners}
    for i in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            jax.block_until_ready(run(warmup + i))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def format_step_table(medians: dict[str, float], title: str) -> str:
    """Milliseconds and ratios to the Adam step, one line per entry."""
    lines = [title, f"{'step':19s} {'ms':>9s} {'x Adam':>7s}"]
    for name, seconds in medians.items():
        lines.append(f"{name:19s} {1000 * seconds:9.3f} {seconds / medians['adam']:6.2f}x")
    return "\n".join(lines)
