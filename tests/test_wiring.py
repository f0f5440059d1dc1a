"""How a run is put together (issue 38's mutation audit): the loop's evaluation schedule, keys
and timings, the KL warm-up's ramp and where it applies, and the spike-and-slab tie -- each
checked by its effect, against values written out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import Trace_ELBO
from scipy import stats

from bmr_jax import data, methods
from bmr_jax.bmr.decide import spike_and_slab
from bmr_jax.inference import evaluate
from bmr_jax.inference.kl_warmup import ScaleLatents, kl_weight


def test_the_kl_weight_ramps_from_its_start_epoch():
    """``train.kl_warmup: [1, 3]`` with 10 batches an epoch: 0 until epoch 1, 0.5 at epoch 2, 1 from
    epoch 3 (a ramp that ignored its start would give 2/3 at epoch 2)."""
    weights = [float(kl_weight(p, 10, 1.0, 3.0)) for p in (0, 5, 10, 15, 20, 30, 100)]
    assert weights == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    assert [float(kl_weight(p, 10, 2.0, 2.0)) for p in (19, 20)] == [0.0, 1.0]  # a step


def test_the_warmup_weight_scales_the_latents_of_model_and_guide():
    """z ~ N(0, 1), y ~ N(z, 1), q(z) = N(m, 1e-3^2), one draw z = m + 1e-3 e (the same key
    every time): at weight 0 the ELBO's loss is the likelihood term alone, -ln N(y; z, 1);
    weighting only the model's latent leaves ln q(z) in it (about 6 nats), only the guide's
    leaves -ln p(z) (1.04); at weight 1 both are in."""
    y, m = 0.3, 0.8

    def model():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(z, 1.0), obs=y)

    def guide():
        numpyro.sample("z", dist.Normal(m, 1e-3))

    def loss(weight, on_model=True, on_guide=True):
        scaled_model = ScaleLatents(model, weight) if on_model else model
        scaled_guide = ScaleLatents(guide, weight) if on_guide else guide
        return float(Trace_ELBO().loss(jax.random.key(0), {}, scaled_model, scaled_guide))

    neg_log_prior = -stats.norm.logpdf(m, 0, 1)  # z within 4e-3 of m: 0.005 nats at most
    assert loss(0.0) == pytest.approx(-stats.norm.logpdf(y, m, 1.0), abs=0.01)
    log_q = loss(0.0, on_guide=False) - loss(0.0)
    assert log_q > 1.0  # ln q at a draw within 4 sd of m: 5.99 - e^2 / 2
    assert loss(0.0, on_model=False) - loss(0.0) == pytest.approx(neg_log_prior, abs=0.01)
    assert loss(1.0) - loss(0.0) == pytest.approx(log_q + neg_log_prior, abs=0.01)


def test_a_tie_at_the_inclusion_log_odds_is_kept():
    """Prune iff Delta F > zeta: with no iterations zeta = psi(1) - psi(1) = 0, so the weight
    at exactly 0 stays (a ``<`` for ``<=`` would prune it)."""
    keep, zeta = spike_and_slab(jnp.array([0.0, 1e-3, -1e-3]), jnp.ones(3, bool), iterations=0)
    assert float(zeta) == 0.0 and np.asarray(keep).tolist() == [True, False, True]


@pytest.fixture(scope="module")
def watched_run():
    """BMR-S&S on LeNet-300-100 (small), 3 blocks of 20 steps, evaluated every 2nd block,
    with the evaluation's keys recorded."""
    ds = data.load("mnist_mini", image_size=28)
    setup = methods.build("bmr_ss", ds, net="lenet_300_100", preset="small", seed=3,
                          train=methods.TrainSettings(blocks=3, steps_per_block=20))
    keys, original = [], evaluate.predictive_probs

    def watched(*args, key, **kwargs):
        keys.append(np.asarray(jax.random.key_data(key)))
        return original(*args, key=key, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "predictive_probs", watched)
        records = methods.run(setup, ds, evaluation=methods.EvalSettings(samples=2, every=2),
                              hooks=methods.RunHooks(progress=False))  # fmt: skip
    return records, keys


def test_every_kth_block_and_the_last_are_evaluated_each_with_its_own_key(watched_run):
    """``eval.every: 2`` of 3 blocks: blocks 2 and 3 are evaluated, block 1 is not."""
    records, keys = watched_run
    assert [r["acc"] is not None for r in records] == [False, True, True]  # 2 and the last, 3
    assert len(keys) == 2 and not np.array_equal(keys[0], keys[1])


def test_a_records_seconds_are_training_reduce_and_evaluation(watched_run):
    records, _ = watched_run
    for r in records:
        assert r["seconds"] == pytest.approx(r["train_seconds"] + r["reduce_seconds"]
                                             + r["eval_seconds"])  # fmt: skip
    assert records[1]["eval_seconds"] > 100 * records[0]["eval_seconds"]  # block 1: none


def test_init_radius_bounds_the_paper_start():
    """``guide.init=paper`` draws every location uniformly in [-r, r] (``guide.init_radius``):
    all within 0.5 and the largest near it at r = 0.5 (the default r = 2 puts most of them
    beyond 0.5)."""
    ds = data.load("mnist_mini", image_size=28)
    for radius in (0.5, 2.0):
        guide = methods.GuideSettings(init="paper", init_radius=radius)
        setup = methods.build("flat_ff", ds, net="lenet_300_100", preset="small", guide=guide)
        params = setup.trainer.params(setup.trainer.init())
        locs = np.concatenate([np.ravel(v) for k, v in params.items() if k.endswith("/z/loc")])
        assert np.abs(locs).max() <= radius and np.abs(locs).max() > 0.95 * radius
        assert np.mean(np.abs(locs)) == pytest.approx(radius / 2, rel=0.05)  # uniform: r/2


def test_padding_sets_the_border_of_a_padded_image():
    """LeNet-5 pads 28x28 images to 32x32 (``data.padding``): ``zero`` pads after
    standardising (a border of exactly 0), ``black`` before (the border is a black pixel
    standardised: -mean/std)."""
    from bmr_jax.runs.config import from_dict
    from bmr_jax.runs.experiment import load_dataset

    def border(padding):
        config = from_dict({"data": {"name": "mnist_mini", "padding": padding},
                            "net": {"name": "lenet5"}})  # fmt: skip
        ds = load_dataset(config)
        return ds, np.asarray(ds.train.images[:, :2, :, :])  # the top two rows: padding

    zero, top = border("zero")
    assert zero.train.images.shape[1:3] == (32, 32) and np.all(top == 0.0)
    black, top = border("black")
    mean, std = np.asarray(black.channel_mean), np.asarray(black.channel_std)
    np.testing.assert_allclose(top, np.broadcast_to((0.0 - mean) / std, top.shape), rtol=1e-5)
    assert np.all(top < 0)


def test_the_trainer_warms_up_both_model_and_guide():
    """The first step of Flat-FF (epoch 0) with ``train.kl_warmup`` starting at epoch 5 is the
    likelihood term alone: about ln 10 nats a datum for an untrained classifier, with the
    analytic KL and with the one-sample estimate (``train.kl: monte_carlo``, where the model's
    ln p(z) and the guide's ln q(z) enter separately). Without the warm-up the KL of 81,840
    weights at sd 0.01 against N(0, 1), over 10,000 images, adds over 30 nats a datum; left
    on the guide alone or on the model alone, ln q (about +3.2 a weight) or -ln p (about +0.9)
    would add several."""
    ds = data.load("mnist_mini", image_size=28)

    def first_loss(warmup, kl):
        train = methods.TrainSettings(blocks=1, steps_per_block=1, kl_warmup=warmup, kl=kl)
        setup = methods.build("flat_ff", ds, net="lenet_300_100", preset="small", train=train)
        _, losses = setup.trainer.run_block(setup.trainer.init(), 1, key=jax.random.key(0),
                                            progress=False)  # fmt: skip
        return float(losses[0])

    for kl in ("analytic", "monte_carlo"):
        warmed, full = first_loss([5, 10], kl), first_loss(None, kl)
        assert abs(warmed - np.log(10)) < 0.5, kl
        assert full - warmed > 10.0, kl
