"""Data-parallel SVI (JAX SPMD) on 4 simulated CPU devices agrees with one device.

The comparison runs in a child process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must be set before JAX starts).
Tolerance: the sharded step sums the batch's gradient in a different order (an all-reduce of
four partial sums), so after 60 SVI steps parameters may differ by float32 rounding that
the optimiser carries forward; we require |difference| <= 2e-4 + 1e-3 |value| on every
posterior-median weight and agreement of the losses to 1e-4 relative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# LeNet-300-100 (a dense network compiles in a fraction of a LeNet-5's time; the sharding of
# the batch axis is the same for any network)
CONFIG = ["method=flat_ff", "data.name=mnist_mini", "net.name=lenet_300_100", "net.preset=small",
          "train.blocks=1", "train.steps_per_block=60", "train.batch_size=64",
          "eval.samples=4"]  # fmt: skip

DRIVER = textwrap.dedent("""
    import json, sys
    import jax
    assert len(jax.devices()) == 4, jax.devices()
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.experiment import run_experiment
    from tests.runs import QUICKSTART
    config, root = json.loads(sys.argv[1]), sys.argv[2]
    from bmr_jax import data, methods
    from bmr_jax.inference import parallel, train
    run_experiment(load_config(QUICKSTART, config), f"{root}/one", progress=False,
                   log=lambda *a: None)
    # the four-device run, watched: the sharding XLA gives every batch that passes through
    # parallel.shard_batch inside the compiled step (jax.debug.inspect_array_sharding reports
    # it at compile time), and the sharding of the optimiser state after each step
    seen, states, original, step = [], [], parallel.shard_batch, train.SVITrainer.step
    def spy(x, mesh):
        out = original(x, mesh)
        jax.debug.inspect_array_sharding(out, callback=lambda s, shape=tuple(x.shape): seen.append(
            {"shape": list(shape), "devices": len(s.device_set),
             "shard": list(s.shard_shape(shape))}))
        return out
    def watched_step(self, *args, **kwargs):
        state, loss = step(self, *args, **kwargs)
        states.append(len(jax.tree.leaves(state.opt_state)[-1].sharding.device_set))
        return state, loss
    parallel.shard_batch, train.SVITrainer.step = spy, watched_step
    run_experiment(load_config(QUICKSTART, config + ["train.data_parallel=true"]),
                   f"{root}/four", progress=False, log=lambda *a: None)
    parallel.shard_batch, train.SVITrainer.step = original, step
    ds = data.load("mnist_mini", image_size=28)
    try:
        methods.build("flat_ff", ds, net="lenet_300_100", preset="small",
                      train=methods.TrainSettings(batch_size=66, data_parallel=True))
        refused = ""
    except parallel.ParallelError as e:
        refused = str(e)
    print(json.dumps({"devices": sorted(set(states)), "refused": refused,
                      "step_batches": seen}))
""")


def test_four_devices_agree_with_one(tmp_path):
    """``train.data_parallel``: a run split over 4 simulated devices agrees with one device
    (the test below checks that the batch really is split)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}  # fmt: skip
    done = subprocess.run([sys.executable, str(driver), json.dumps(CONFIG), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["devices"] == [4]  # after every step the state is on every device
    # the training step's minibatch (64 images and their labels) is split 4 ways along the
    # batch axis: 64 / 4 = 16 per device (a step that never sharded it would show 1 device)
    batches = {tuple(b["shape"]): b for b in report["step_batches"]}
    assert (64, 28, 28, 1) in batches and (64,) in batches, report["step_batches"]
    assert batches[(64, 28, 28, 1)]["devices"] == 4
    assert batches[(64, 28, 28, 1)]["shard"] == [16, 28, 28, 1]
    assert batches[(64,)]["devices"] == 4 and batches[(64,)]["shard"] == [16]
    assert report["refused"] == "train.batch_size 66 is not divisible by the 4 devices of the mesh"
    one, four = tmp_path / "one", tmp_path / "four"
    records = [[json.loads(x) for x in (f / "metrics.jsonl").read_text().splitlines()]
               for f in (one, four)]  # fmt: skip
    for a, b in zip(*records, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
        assert abs(a["acc"] - b["acc"]) <= 2e-3 and abs(a["nll"] - b["nll"]) <= 2e-3
    with np.load(one / "posterior.npz") as p1, np.load(four / "posterior.npz") as p4:
        for key in p1:
            if key.startswith("weight/"):
                np.testing.assert_allclose(p1[key], p4[key], rtol=1e-3, atol=2e-4, err_msg=key)


SHARD_DRIVER = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding
    from flax import nnx
    assert len(jax.devices()) == 4, jax.devices()
    from bmr_jax.bayes import guides, priors
    from bmr_jax.inference import evaluate, parallel
    from bmr_jax.bayes.model import BayesianNetwork

    mesh = parallel.data_mesh()

    def describe(a, x=None):
        s = a.sharding
        named = isinstance(s, NamedSharding)
        return {"named": named,
                "spec": [str(p) for p in s.spec] if named else None,
                "axes": list(s.mesh.axis_names) if named else None,
                "same_devices": set(s.device_set) == set(mesh.devices.flat),
                "devices": len(s.device_set),
                "shapes": [list(sh.data.shape) for sh in a.addressable_shards],
                "content": None if x is None else all(
                    np.array_equal(np.asarray(sh.data), x[sh.index])
                    for sh in a.addressable_shards)}

    shard = jax.jit(lambda a: parallel.shard_batch(a, mesh))
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)  # a batch of 8 inputs
    y = np.arange(8, dtype=np.int32)  # and its labels
    report = {"x": describe(shard(x), x), "y": describe(shard(y), y),
              "odd": describe(shard(x[:6]), x[:6]),
              "no_mesh": parallel.shard_batch(x, None) is x}

    # the evaluation path: the predictive's batch is sharded, so are its probabilities
    class Linear(nnx.Module):
        def __init__(self, rngs):
            self.head = nnx.Linear(3, 2, rngs=rngs)
        def __call__(self, x):
            return self.head(x)

    bnet = BayesianNetwork.from_module(Linear(nnx.Rngs(0)), (3,), priors.FlatPrior())
    init = bnet.init_latents()
    sites = guides.latent_sites(bnet.model, jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32),
                                init_values=init)
    guide = guides.MeanFieldGuide(sites, init)
    params = {"head/z/loc": init["head/z"], "head/z/scale": jnp.full((2, 4), 0.1),
              "head/precision/loc": jnp.asarray(0.0), "head/precision/scale": jnp.asarray(0.1)}
    keys = jax.random.split(jax.random.key(0), 3)
    probs = evaluate.make_predictive(bnet, guide, mesh)(params, bnet.full_gamma(), keys,
                                                        jnp.asarray(x))
    report["predictive"] = describe(probs)
    print(json.dumps(report))
""")


def test_shard_batch_splits_the_batch_over_the_data_axis(tmp_path):
    """The agreement test above would also pass if no batch were ever sharded (every device
    computing the whole batch). Here, on the same 4 simulated devices, a batch of 8 through
    ``parallel.shard_batch`` (inside ``jit``, as the trainer and the predictive use it) is a
    ``NamedSharding`` over the mesh's ``"data"`` axis: 4 shards of 8 / 4 = 2 rows, one per
    device, each holding its own slice of the batch. A batch the devices do not divide (6) is
    left alone (one device), as is any batch without a mesh. The predictive under a mesh
    returns probabilities split the same way, so its batch was sharded."""
    driver = tmp_path / "shard_driver.py"
    driver.write_text(SHARD_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}  # fmt: skip
    done = subprocess.run([sys.executable, str(driver)], cwd=REPO, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    for name, shard_shape in (("x", [2, 3]), ("y", [2])):
        got = report[name]
        assert got["named"] and got["axes"] == ["data"] and got["spec"] == ["data"], got
        assert got["devices"] == 4 and got["same_devices"], got
        assert got["shapes"] == [shard_shape] * 4, got  # batch / devices rows on each
        assert got["content"], got  # each device holds its own slice of the batch
    assert report["odd"]["devices"] == 1 and report["odd"]["shapes"] == [[6, 3]]
    assert report["no_mesh"]
    predictive = report["predictive"]
    assert predictive["devices"] == 4 and predictive["shapes"] == [[2, 2]] * 4, predictive


def test_a_data_parallel_run_compiles_its_steps_once_also_after_a_resume(tmp_path, monkeypatch):
    """Under a mesh an array's sharding is part of its type. A state made on the host (fresh,
    or read back from a checkpoint) must enter the compiled steps already replicated on the
    mesh, as the reduce and the steps return it; otherwise each jitted function is traced and
    compiled a second time after the first reduce (seen with ``JAX_EXPLAIN_CACHE_MISSES``:
    ``f32[10,31]({})`` against ``f32[10,31]({Auto: ('data',)})``). A one-device mesh, in this
    process, shows it as four would. Counted: the entries of each jitted function's cache."""
    from bmr_jax.inference import evaluate, train
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.experiment import run_experiment
    from tests.runs import QUICKSTART, TINY, Crash, at

    trainers, predictives, original = [], [], evaluate.make_predictive
    step = train.SVITrainer.step

    def watched_step(self, *args, **kwargs):
        trainers.append(self)
        return step(self, *args, **kwargs)

    def watched_predictive(*args, **kwargs):
        predictives.append(original(*args, **kwargs))
        return predictives[-1]

    monkeypatch.setattr(train.SVITrainer, "step", watched_step)
    monkeypatch.setattr(evaluate, "make_predictive", watched_predictive)
    config = load_config(QUICKSTART, [*TINY, "train.data_parallel=true"])
    out = tmp_path / "run"
    with pytest.raises(Crash):  # stopped after block 2's checkpoint: 1 reduce, 2 evaluations
        run_experiment(config, out, progress=False, log=lambda s: None,
                       on_event=at(("checkpoint", 2, 0), "crash"))  # fmt: skip
    first = trainers[-1]
    assert first.mesh is not None and first._update._cache_size() == 1
    assert predictives[-1]._cache_size() == 1
    run_experiment(config, out, progress=False, log=lambda s: None)  # resumed: block 3
    assert trainers[-1] is not first and trainers[-1]._update._cache_size() == 1
    assert predictives[-1]._cache_size() == 1
