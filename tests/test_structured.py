"""Structured BMR's pieces against independent references (issue 36).

- Which consumer columns read a unit (``UnitGeometry``): the columns whose gradient vanishes
  once the unit's row is zeroed, found by autodiff through the real network, never by the
  index arithmetic the code uses.
- A unit's group Delta F: the Savage-Dickey log density ratio at 0 of every one of its entries,
  summed with scipy over an explicit list of entries.
- Unit multipliers: ``theta_j = 0`` gives the network with unit ``j``'s row zeroed, and
  ``theta_j = 2`` the network whose unit ``j`` outputs twice its activation.
- L1 filter norms: ``numpy.abs(kernel).sum()`` of each output channel of the NNX kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpyro import handlers
from scipy.stats import norm

from bmr_jax.bayes.layers import build_layer_view, from_matrix, to_matrix
from bmr_jax.bayes.priors import FlatPrior
from bmr_jax.bayes.priors.unit_scaled import UnitScaledPrior, theta_site
from bmr_jax.bayes.units import unit_geometries, unit_links
from bmr_jax.bmr import SpikeAndSlab
from bmr_jax.bmr.delta_f import delta_f
from bmr_jax.bmr.groups import (
    make_group_reduce,
    make_multiplier_reduce,
    spike_score,
    unit_delta_f,
)


class SmallConvNet(nnx.Module):
    """conv(1->4, 3x3) -> pool -> conv(4->5, 3x3) -> flatten -> dense(->6) -> dense(->3), tanh."""

    def __init__(self, rngs):
        self.convs = nnx.List([nnx.Conv(1, 4, (3, 3), padding="VALID", rngs=rngs),
                               nnx.Conv(4, 5, (3, 3), padding="VALID", rngs=rngs)])
        self.dense = nnx.List([nnx.Linear(5 * 2 * 2, 6, rngs=rngs), nnx.Linear(6, 3, rngs=rngs)])
        self.activation = nnx.tanh

    def __call__(self, x):
        x = self.activation(self.convs[0](x))
        x = nnx.avg_pool(x, (2, 2), (2, 2))
        x = self.activation(self.convs[1](x))
        x = x.reshape(x.shape[0], -1)
        x = self.activation(self.dense[0](x))
        return self.dense[1](x)


INPUT = (10, 10, 1)


@pytest.fixture(scope="module")
def net():
    module = SmallConvNet(nnx.Rngs(0))
    view = build_layer_view(module, INPUT)
    geometries = unit_geometries(view, unit_links(module, view, sequential=True))
    return module, view, geometries


def _matrices(module, view):
    state = nnx.state(module, nnx.Param)
    out = {}
    for spec in view.layers:
        layer = state
        for key in spec.path:
            layer = layer[key]
        out[spec.name] = np.asarray(to_matrix(spec, layer["kernel"][...], layer["bias"][...]))
    return out


def _apply(module, view, matrices, x):
    """The module's output with every layer's weights read from ``matrices``."""
    graphdef, state = nnx.split(module, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    values = {}
    for spec in view.layers:
        kernel, bias = from_matrix(spec, matrices[spec.name])
        values[spec.path + ("kernel",)], values[spec.path + ("bias",)] = kernel, bias
    new = nnx.from_flat_state([(p, values.get(p, v[...])) for p, v in flat.items()])
    return nnx.merge(graphdef, new)(x)


_READING = {}  # the autodiff answers, shared by the tests of one module


def _reading_columns(module, view, producer, consumer, rows, input_shape=INPUT):
    """Columns of ``consumer`` whose gradient is zero for random inputs once ``rows`` of
    ``producer`` (bias included) are zero: the columns that read those units (autodiff)."""
    key = (id(module), producer, consumer, tuple(rows), input_shape)
    if key not in _READING:
        _READING[key] = _zero_gradient_columns(module, view, producer, consumer, rows,
                                               input_shape)  # fmt: skip
    return _READING[key]


def _zero_gradient_columns(module, view, producer, consumer, rows, input_shape):
    matrices = {k: jnp.asarray(v) for k, v in _matrices(module, view).items()}
    matrices[producer] = matrices[producer].at[jnp.asarray(rows)].set(0.0)
    x = jax.random.normal(jax.random.key(1), (8, *input_shape))

    def loss(w):
        return jnp.sum(jnp.sin(_apply(module, view, {**matrices, consumer: w}, x)))

    grad = np.asarray(jax.jit(jax.grad(loss))(matrices[consumer]))
    return set(np.flatnonzero(np.all(grad == 0.0, axis=0)))


def test_every_hidden_layer_is_a_unit_link(net):
    _, _, geometries = net
    assert [(g.link.producers, g.link.consumer, g.units, g.positions) for g in geometries] == [
        (("convs.0",), "convs.1", 4, 9), (("convs.1",), "dense.0", 5, 4),
        (("dense.0",), "dense.1", 6, 1)]  # fmt: skip


@pytest.mark.parametrize("index", [0, 1, 2])
def test_removal_prunes_exactly_the_columns_that_read_the_unit(net, index):
    module, view, geometries = net
    g = geometries[index]
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    for unit in range(g.units):
        keep = jnp.arange(g.units) != unit
        removed = g.remove(masks, keep)
        producer = np.asarray(removed[g.link.producers[0]])
        assert np.flatnonzero(~producer.all(axis=1)).tolist() == [unit]
        assert not producer[unit].any()  # the whole row, bias included
        cleared = set(np.flatnonzero(~np.asarray(removed[g.link.consumer]).all(axis=0)))
        expected = _reading_columns(module, view, g.link.producers[0], g.link.consumer, [unit])
        assert cleared == expected and len(expected) == g.positions


def _random_posterior(view, key):
    out = {}
    for i, s in enumerate(view.layers):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        mean = 0.6 * jax.random.normal(k1, s.shape)
        sd = jnp.exp(jax.random.uniform(k2, s.shape, minval=-2.5, maxval=0.3))
        out[s.name] = (mean, 1.0 / sd**2)
    return out


def test_group_delta_f_is_the_savage_dickey_sum_over_the_unit(net):
    """sum over the unit's alive entries of ln N(0; mu, sd^2) - ln N(0; 0, s), with s = 2."""
    module, view, geometries = net
    posterior = _random_posterior(view, jax.random.key(4))
    rng = np.random.default_rng(0)
    masks = {s.name: jnp.asarray(rng.random(s.shape) > 0.2) for s in view.layers}
    entry_df = {name: delta_f(mean, precision, 2.0, 0.0)[0]
                for name, (mean, precision) in posterior.items()}  # fmt: skip
    specs = {s.name: s for s in view.layers}
    for g in geometries:
        got = np.asarray(unit_delta_f(g, entry_df, masks))
        for unit in range(g.units):
            rows = [(g.link.producers[0], unit, c) for c in range(specs[g.link.producers[0]].cols)]
            columns = _reading_columns(module, view, g.link.producers[0], g.link.consumer, [unit])
            cols = [(g.link.consumer, r, c) for r in range(specs[g.link.consumer].rows)
                    for c in columns]  # fmt: skip
            want = 0.0
            for name, r, c in rows + cols:
                if masks[name][r, c]:
                    mean, precision = (float(a[r, c]) for a in posterior[name])
                    want += norm.logpdf(0, mean, precision**-0.5) - norm.logpdf(0, 0, 2**0.5)
            assert got[unit] == pytest.approx(want, rel=1e-4, abs=1e-3)


def test_group_reduce_removes_the_units_the_rule_rejects(net):
    """A unit whose entries are all at ``N(0, 0.1^2)`` (the spike's evidence) goes; units whose
    entries are far from 0 stay; the learned inclusion rate is one of the rule's outputs."""
    _, view, geometries = net
    posterior = {s.name: (jnp.full(s.shape, 3.0), jnp.full(s.shape, 100.0)) for s in view.layers}
    mean, precision = posterior["dense.0"]
    posterior["dense.0"] = (mean.at[2].set(0.0), precision)
    consumer_mean, consumer_precision = posterior["dense.1"]
    posterior["dense.1"] = (consumer_mean.at[:, 2].set(0.0), consumer_precision)
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    reduce = make_group_reduce(view, geometries, SpikeAndSlab())
    result = reduce(posterior, masks, 2)
    kept = {name: np.asarray(m) for name, m in result.masks.items()}
    assert np.flatnonzero(~kept["dense.0"].any(axis=1)).tolist() == [2]
    assert not kept["dense.1"][:, 2].any() and kept["dense.1"][:, [0, 1, 3, 4, 5, 6]].all()
    assert kept["convs.0"].all() and kept["convs.1"].all()
    assert set(result.info["zeta"]) == {g.label for g in geometries}


def _scaled_output(module, view, units, theta_values, x):
    """The network's output when the unit-scaled prior's multipliers take ``theta_values``
    (every other latent at its initial value, ``Z`` the module's own weights / scale)."""
    prior = UnitScaledPrior(FlatPrior(fixed_precision=1.0), units)
    with handlers.seed(rng_seed=0), handlers.substitute(data=theta_values):
        scales = prior.scales(view)
    base = FlatPrior(fixed_precision=1.0).scales(view)
    matrices = {name: jnp.asarray(w) * (scales[name] / base[name])
                for name, w in _matrices(module, view).items()}  # fmt: skip
    return _apply(module, view, matrices, x)


def test_a_zero_multiplier_removes_its_unit_and_two_doubles_its_output(net):
    module, view, geometries = net
    x = jax.random.normal(jax.random.key(2), (8, *INPUT))
    ones = {theta_site(g): jnp.ones(g.units) for g in geometries}
    dense = _apply(module, view, {k: jnp.asarray(v) for k, v in _matrices(module, view).items()},
                   x)  # fmt: skip
    np.testing.assert_allclose(_scaled_output(module, view, geometries, ones, x), dense,
                               rtol=1e-6)  # fmt: skip
    g = geometries[1]  # convs.1's channels, read by dense.0 through the flatten
    zero = {**ones, theta_site(g): jnp.ones(g.units).at[3].set(0.0)}
    matrices = {k: jnp.asarray(v) for k, v in _matrices(module, view).items()}
    matrices["convs.1"] = matrices["convs.1"].at[3].set(0.0)  # tanh(0) = 0: the channel is gone
    np.testing.assert_allclose(_scaled_output(module, view, geometries, zero, x),
                               _apply(module, view, matrices, x), rtol=1e-5, atol=1e-6)
    # theta = 2 on dense.0's unit 1: the same as doubling that unit's activation by hand
    g = geometries[2]
    two = {**ones, theta_site(g): jnp.ones(g.units).at[1].set(2.0)}
    hidden = nnx.tanh(module.dense[0](nnx.tanh(module.convs[1](nnx.avg_pool(
        nnx.tanh(module.convs[0](x)), (2, 2), (2, 2)))).reshape(8, -1)))  # fmt: skip
    want = module.dense[1](hidden.at[:, 1].multiply(2.0))
    np.testing.assert_allclose(_scaled_output(module, view, geometries, two, x), want,
                               rtol=1e-5, atol=1e-6)


def test_multiplier_delta_f_is_the_savage_dickey_ratio_of_theta(net):
    """``ln N(0; m, v) - ln N(0; 0, 1)`` per unit; a unit with ``theta ~ N(0.05, 0.3^2)`` is
    removed by the evidence rule, units with ``theta ~ N(1, 0.1^2)`` are kept."""
    from bmr_jax.bmr import Evidence

    _, view, geometries = net
    theta = {g.label: (jnp.ones(g.units).at[0].set(0.05), jnp.full(g.units, 0.1).at[0].set(0.3))
             for g in geometries}  # fmt: skip
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    reduce = make_multiplier_reduce(view, geometries, spike_score(1.0), Evidence())
    result = reduce(theta, None, masks, 2)
    for g in geometries:
        mean, sd = (np.asarray(a) for a in theta[g.label])
        want = norm.logpdf(0, mean, sd) - norm.logpdf(0, 0, 1)
        np.testing.assert_allclose(result.delta_f[g.label], want, rtol=1e-5)
        alive = np.asarray(result.masks[g.link.producers[0]]).any(axis=1)
        assert alive.tolist() == [False] + [True] * (g.units - 1)


# ------------------------------------------------------------------ small real runs (mnist_mini)

RUN = ["data.name=mnist_mini", "net.name=mlp", "net.preset=small", "train.blocks=4",
       "train.steps_per_block=100", "eval.samples=4", "eval.every=4"]  # fmt: skip
STRUCTURED = {"bmr_group": [], "l1_filters": [], "bmr_multipliers": ["bmr.rule=evidence"],
              "bmrs": ["train.lr=0.05"]}


@pytest.fixture(scope="module")
def structured_runs(tmp_path_factory):
    """One short run of each structured method (``bmr_multipliers`` with the evidence rule:
    its learned unit inclusion rate stays near 1 for the first blocks; BMRS at a learning rate
    that moves SBP's multipliers within 400 steps)."""
    from bmr_jax.runs.config import load_config
    from bmr_jax.runs.experiment import run_experiment

    out = {}
    for method, extra in STRUCTURED.items():
        folder = tmp_path_factory.mktemp(method)
        config = load_config(None, [f"method={method}", *RUN, *extra])
        run_experiment(config, folder, progress=False, log=lambda line: None)
        out[method] = folder
    return out


@pytest.mark.parametrize("method", list(STRUCTURED))
def test_a_real_run_removes_whole_units_and_exports_the_smaller_network(structured_runs, method):
    import json

    from bmr_jax import export
    from bmr_jax.export.from_run import read_run

    folder = structured_runs[method]
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    hidden = [name for name in records[0]["units_by_layer"] if name.startswith("hidden")]
    assert all(records[0]["units_by_layer"][name] == 100 for name in hidden)
    final = records[-1]["units_by_layer"]
    assert sum(final[name] for name in hidden) < 400  # whole units went
    source = read_run(folder)
    view = build_layer_view(source.module, source.input_shape)
    for name in hidden:  # a removed unit loses its whole row and the columns reading it
        rows = source.masks[name].any(axis=1)
        assert rows.sum() == final[name] and (source.masks[name][~rows] == 0).all()
    exported = export.export_network(source.module, source.input_shape, source.masks,
                                      net="mlp", preset="small", num_classes=10,
                                      sequential=True)  # fmt: skip
    small = build_layer_view(exported.module, source.input_shape)
    assert [s.rows for s in small.layers][:-1] == [final[name] for name in hidden]
    x = jax.random.normal(jax.random.key(0), (64, *source.input_shape))
    masked = {k: jnp.asarray(v) * source.masks[k] for k, v in _matrices(source.module,
                                                                         view).items()}
    want = np.asarray(_apply(source.module, view, masked, x))
    np.testing.assert_allclose(exported.module(x), want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


# ------------------------------------------------------------------ BMRS on SBP's multipliers


def test_bmrs_delta_f_is_the_quadrature_of_the_prior_ratio():
    """``ln E_q[p~/p]`` by quadrature: ``q`` SBP's truncated normal on ``[-20, 0]``, ``p`` the
    uniform on it, ``p~`` the uniform on ``[ln 2^-23, ln 2^-8]``."""
    from scipy.integrate import quad
    from scipy.stats import truncnorm

    from bmr_jax.bmr.bmrs import bmrs_uniform_delta_f

    a, b, a2, b2 = -20.0, 0.0, -23 * np.log(2), -8 * np.log(2)
    for mu, sigma in [(0.0, 0.01), (-3.0, 1.0), (-9.0, 2.0), (-14.0, 0.5), (-19.0, 3.0)]:
        q = truncnorm((a - mu) / sigma, (b - mu) / sigma, loc=mu, scale=sigma)
        mass = quad(q.pdf, a2, b2, points=[mu] if a2 < mu < b2 else None, limit=200)[0]
        want = np.log(mass * (b - a) / (b2 - a2)) if mass > 0 else -np.inf
        got = float(bmrs_uniform_delta_f(jnp.float32(mu), jnp.float32(sigma), a, b))
        if np.isfinite(want) and want > -50:
            assert got == pytest.approx(want, abs=2e-3), (mu, sigma)
        else:
            assert got < -50


def test_log_normal_mass_in_both_tails():
    from bmr_jax.bayes.truncated import log_normal_mass

    for x1, x2 in [(-40.0, -39.0), (-3.0, 1.0), (8.0, 9.0), (30.0, 31.0), (-1.0, 1e-3)]:
        want = np.log(np.exp(norm.logsf(x1) - norm.logsf(x2)) - 1) + norm.logsf(x2) \
            if x1 > 0 else np.log(np.exp(norm.logcdf(x2) - norm.logcdf(x1)) - 1) + \
            norm.logcdf(x1)  # fmt: skip
        assert float(log_normal_mass(jnp.float32(x1), jnp.float32(x2))) == pytest.approx(
            want, rel=1e-4)  # fmt: skip


def test_sbp_kl_and_median_against_monte_carlo_and_scipy():
    import numpyro.distributions as dist
    from numpyro.distributions.kl import kl_divergence
    from scipy.stats import truncnorm

    from bmr_jax.bayes.priors import unit_scaled  # noqa: F401  (registers the KL)
    from bmr_jax.bayes.truncated import truncated_normal_median

    mu, sigma = jnp.array([0.0, -3.0, -19.5, -10.0]), jnp.array([0.1, 2.0, 1.0, 0.01])
    q = dist.TruncatedNormal(mu, sigma, low=-20.0, high=0.0)
    p = dist.Uniform(-20.0, 0.0).expand([4])
    x = q.sample(jax.random.key(0), (50_000,))
    monte_carlo = np.asarray(jnp.mean(q.log_prob(x) - p.log_prob(x), axis=0))
    # each draw's log-ratio has sd <= 0.71 (a normal's log density), so the mean's is < 0.0032
    np.testing.assert_allclose(kl_divergence(q, p), monte_carlo, atol=0.015)
    for m, s in zip(np.asarray(mu), np.asarray(sigma), strict=True):
        want = truncnorm((-20 - m) / s, (0 - m) / s, loc=m, scale=s).median()
        assert float(truncated_normal_median(m, s, -20.0, 0.0)) == pytest.approx(want, abs=1e-4)


def test_a_log_uniform_multiplier_scales_its_unit_by_exp_log_theta(net):
    _, view, geometries = net
    prior = UnitScaledPrior(FlatPrior(fixed_precision=1.0), geometries, theta_prior="log_uniform")
    values = {prior.site(g): jnp.zeros(g.units) for g in geometries}
    g = geometries[2]
    values[prior.site(g)] = values[prior.site(g)].at[4].set(np.log(0.5))
    with handlers.seed(rng_seed=0), handlers.substitute(data=values):
        scales = prior.scales(view)
    assert prior.site(g) == "dense.1/log_theta"
    np.testing.assert_allclose(np.asarray(scales["dense.1"])[0],
                               [1, 1, 1, 1, 0.5, 1, 1], rtol=1e-6)  # the bias column stays 1


def test_a_removed_head_or_feed_forward_unit_is_what_the_consumer_reads():
    """A ViT: head ``h`` is its query, key and value rows, read by the output projection's
    columns that go to zero gradient once the value rows are zero (autodiff); a feed-forward
    unit is an ``fc1`` row read by one ``fc2`` column."""
    from bmr_jax import nets

    module = nets.create_net("vit", 10, (8, 8, 1), "small", rngs=nnx.Rngs(0))
    view = build_layer_view(module, (8, 8, 1))
    geometries = unit_geometries(view, unit_links(module, view, sequential=False))
    heads, ff = geometries[0], geometries[1]
    assert heads.link.producers == ("blocks.0.attention.query", "blocks.0.attention.key",
                                    "blocks.0.attention.value") and heads.units == 4
    assert ff.link.consumer == "blocks.0.mlp.fc2" and ff.units == 128
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    for g, unit, source in ((heads, 2, "blocks.0.attention.value"), (ff, 5, "blocks.0.mlp.fc1")):
        removed = g.remove(masks, jnp.arange(g.units) != unit)
        rows = [np.flatnonzero(~np.asarray(removed[p]).all(axis=1)).tolist()
                for p in g.link.producers]  # fmt: skip
        want = list(range(unit * g.link.unit_rows, (unit + 1) * g.link.unit_rows))
        assert rows == [want] * len(g.link.producers)
        cleared = set(np.flatnonzero(~np.asarray(removed[g.link.consumer]).all(axis=0)))
        zeroed = _reading_columns(module, view, source, g.link.consumer, want, (8, 8, 1))
        assert cleared == zeroed == set(want)



def test_readme_deploy_section_runs(structured_runs, tmp_path, monkeypatch, capsys):
    """The README's structured route end to end on the small group-BMR run above: its export,
    the narrower network loaded back, its speed-up measured against the dense one, and its
    predictive."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Deploy the pruned network")[1].split("\n## ")[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "group").symlink_to(structured_runs["bmr_group"])
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (100, 10)
    assert abs(float(namespace["probs"].sum(axis=1).mean()) - 1.0) < 1e-5
    out = capsys.readouterr().out
    widths = [int(w) for w in re.findall(r"hidden\.\d: 100 -> (\d+)", out)]
    assert len(widths) == 4 and sum(widths) < 400  # whole units removed by the export
    assert re.search(r"[\d.]+x faster at batch 1000", out)


def test_l1_filter_norms_are_the_kernels_absolute_sums_per_output_channel(net):
    """Li et al. 2017's filter norm ``sum |K[..., j]|`` read off the NNX kernels themselves
    (bias left out, a masked entry counted 0), and the target rule removes the lowest."""
    from bmr_jax.bmr import TargetSparsity
    from bmr_jax.bmr.decide import PolynomialSchedule
    from bmr_jax.methods.between.filters import filter_norms

    module, view, geometries = net
    weights = {k: jnp.asarray(v) for k, v in _matrices(module, view).items()}
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    masks["convs.1"] = masks["convs.1"].at[2, 0].set(False)
    has_bias = {s.name: True for s in view.layers}
    kernels = {"convs.0": module.convs[0].kernel[...], "convs.1": module.convs[1].kernel[...],
               "dense.0": module.dense[0].kernel[...]}  # fmt: skip
    for g in geometries:
        kernel = np.abs(np.asarray(kernels[g.link.producers[0]]))
        want = kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
        if g.link.producers[0] == "convs.1":  # entry (0, 0, 0, 2) is masked
            want[2] -= kernel[0, 0, 0, 2]
        np.testing.assert_allclose(filter_norms(g, weights, masks, has_bias), want, rtol=1e-5)
    rule = TargetSparsity(PolynomialSchedule(final=0.5, begin=1, end=1))
    g = geometries[2]
    norms = filter_norms(g, weights, masks, has_bias)
    keep, _ = rule({"u": -norms}, {"u": jnp.ones(g.units, bool)}, {"u": True}, 2)  # at 0.5
    assert sorted(np.flatnonzero(~np.asarray(keep["u"]))) == sorted(np.argsort(norms)[:3])
