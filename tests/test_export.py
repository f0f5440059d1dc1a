"""The export: units removed exactly, the files, the round trip, the command line.

References: hand-computed networks and byte counts, the masked network's own logits on real
test images (the export must not change them), and a NumPy Monte Carlo of a Gaussian
predictive.
"""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmr_jax import data, export, nets
from bmr_jax.bayes.layers import build_layer_view
from bmr_jax.cli import main
from bmr_jax.export import archive
from bmr_jax.export.folder import parameters

NETWORKS = [("mlp", "small"), ("lenet5", "paper"), ("vit", "small"), ("mixer", "small")]


@pytest.fixture(scope="module")
def images(data_dir):
    """64 real Fashion-MNIST test images at 28x28 (MLP) and padded to 32x32 (the others)."""
    return {size: data.load("fashion_mnist", image_size=size, data_dir=data_dir).test.images[:64]
            for size in (28, 32)}  # fmt: skip


def _pruned_units_masks(view, rng, heads=None):
    """Masks with every kind of removable unit: half the entries pruned at random, whole rows
    pruned (zero units), rows left with their bias only (constant units), and columns pruned in
    every row of the layer reading them (unread units); ``heads``: per attention prefix, the
    heads to cut through their value rows, their output columns, and the value weights only."""
    masks = {}
    for spec in view.layers:
        mask = rng.random(spec.shape) < 0.5
        if not spec.is_last:
            mask[rng.random(spec.rows) < 0.25] = False
            mask[rng.random(spec.rows) < 0.15, : spec.fan_in] = False
        mask[:, rng.random(spec.cols) < 0.1] = False
        masks[spec.name] = mask
    for prefix, (zero, unread, constant) in (heads or {}).items():
        head_dim = view.layers[view.names().index(f"{prefix}.query")].rows // 4
        masks[f"{prefix}.value"][zero * head_dim : (zero + 1) * head_dim] = False
        masks[f"{prefix}.out"][:, unread * head_dim : (unread + 1) * head_dim] = False
        masks[f"{prefix}.value"][constant * head_dim : (constant + 1) * head_dim, :-1] = False
    return masks


def _masked(name, preset, masks_of, seed=0):
    """A registry network with random weights and the masks applied (pruned entries zero)."""
    shape = (28, 28, 1) if name == "mlp" else (32, 32, 1)
    module = nets.create_net(name, 10, shape, preset, rngs=nnx.Rngs(seed))
    module.eval()
    view = build_layer_view(module, shape)
    params = nnx.state(module, nnx.Param)
    masks = masks_of(view)
    matrices = {k: jnp.where(masks[k], v, 0.0) for k, v in view.matrices(params).items()}
    original = nnx.clone(module)
    nnx.update(module, view.write(params, matrices))
    return module, original, masks, shape


def _export(module, shape, masks, name, preset, scales=None):
    spec = nets.get_net_spec(name)
    return export.export_network(module, shape, masks, net=name, preset=preset, num_classes=10,
                                 sequential=spec.sequential, scales=scales)  # fmt: skip


@pytest.mark.numerics
@pytest.mark.parametrize("name, preset", NETWORKS)
def test_the_export_computes_what_the_masked_network_computes(name, preset, images):
    rng = np.random.default_rng(7)
    heads = {"blocks.0.attention": (1, 2, 3), "blocks.1.attention": (0, 0, 0)}
    module, original, masks, shape = _masked(
        name, preset, lambda view: _pruned_units_masks(view, rng, heads if name == "vit" else None)
    )
    x = jnp.asarray(images[shape[0]])
    exported = _export(module, shape, masks, name, preset)
    reference, unmasked = np.asarray(module(x)), np.asarray(original(x))
    tolerance = 2e-5 * np.abs(reference).max()
    np.testing.assert_allclose(np.asarray(exported.module(x)), reference, atol=tolerance, rtol=0)
    assert np.abs(unmasked - reference).max() > 100 * tolerance  # the masks matter
    assert nets.count_params(exported.module) < 0.8 * nets.count_params(module)
    for label, (before, after) in exported.units.items():
        assert 1 <= after < before or label.endswith("heads"), label  # heads: cut below only
    if name == "vit":
        # block 0: heads 1 (values zero), 2 (unread) and 3 (constant values, folded) go;
        # block 1: head 0 is all three at once
        assert exported.units["blocks.0.attention heads"] == (4, 1)
        assert exported.units["blocks.1.attention heads"] == (4, 3)


@pytest.mark.numerics
@pytest.mark.parametrize("name, preset", NETWORKS)
def test_an_unpruned_network_exports_as_itself(name, preset, images):
    module, _, masks, shape = _masked(name, preset, lambda view: {s.name: np.ones(s.shape, bool)
                                                                  for s in view.layers})
    exported = _export(module, shape, masks, name, preset)
    before, after = parameters(module), parameters(exported.module)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    x = jnp.asarray(images[shape[0]][:8])
    np.testing.assert_array_equal(np.asarray(exported.module(x)), np.asarray(module(x)))


def _hand_mlp():
    """tanh MLP 2 -> 3 -> 2 with hand-set weights."""
    config = nets.MLPConfig(hidden=(3,), activation="tanh")
    module = nets.MLP(config, 2, (1, 1, 2), rngs=nnx.Rngs(0))
    module.hidden[0].kernel[...] = jnp.array([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])
    module.hidden[0].bias[...] = jnp.array([0.5, 0.25, -0.5])
    module.head.kernel[...] = jnp.array([[1.0, 2.0], [4.0, -3.0], [-2.0, 0.5]])
    module.head.bias[...] = jnp.array([0.1, -0.2])
    module.eval()
    masks = {"hidden.0": np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1]], bool),  # rows: units
             "head": np.ones((2, 4), bool)}  # fmt: skip
    return module, masks


def test_a_bias_only_unit_folds_into_the_next_bias_by_hand():
    module, masks = _hand_mlp()
    exported = _export(module, (1, 1, 2), masks, "mlp", "paper")
    # unit 0 keeps only its bias 0.5: it outputs tanh(0.5) and its head column (1, 2) folds in;
    # unit 1 (weight 2.0 and bias 0.25 kept) and unit 2 stay
    t = 0.46211715726000974
    head = exported.module.head
    np.testing.assert_allclose(np.asarray(head.bias[...]), [0.1 + t, -0.2 + 2 * t], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(head.kernel[...]), [[4.0, -3.0], [-2.0, 0.5]])
    np.testing.assert_array_equal(np.asarray(exported.module.hidden[0].kernel[...]),
                                  [[2.0, -1.0], [0.0, 3.0]])  # fmt: skip
    assert exported.units == {"hidden.0 units": (3, 2)}


def test_under_a_posterior_a_bias_only_unit_stays_and_an_unread_one_goes():
    module, masks = _hand_mlp()
    masks["head"][:, 1] = False  # unit 1 is read by nothing now
    scales = {"hidden.0": np.full((3, 3), 0.1, np.float32), "head": np.full((2, 4), 0.2)}
    exported = _export(module, (1, 1, 2), masks, "mlp", "paper", scales=scales)
    assert exported.units == {"hidden.0 units": (3, 2)}  # units 0 (random bias) and 2
    np.testing.assert_array_equal(np.asarray(exported.module.head.bias[...]),
                                  np.float32([0.1, -0.2]))  # nothing folded
    kernel_scale = exported.scales[("hidden", 0, "kernel")]  # (inputs, units 0 and 2)
    np.testing.assert_array_equal(kernel_scale, np.float32([[0, 0.1], [0, 0.1]]))  # 0: pruned
    head_scale = exported.scales[("head", "kernel")]
    np.testing.assert_array_equal(head_scale, np.full((2, 2), 0.2, np.float32))


@pytest.mark.parametrize("nonzero, expected", [(3, "csr"), (200, "bitmask"), (400, "dense")])
def test_each_tensor_takes_its_smallest_encoding(nonzero, expected):
    # (4, 100) float32: dense 1600 bytes; bitmask 50 + 4n; csr 5 * 4 + 2n (uint16) + 4n
    array = np.zeros(400, np.float32)
    array[np.random.default_rng(0).choice(400, nonzero, replace=False)] = 1.5
    array = array.reshape(4, 100)
    encoding, stored = archive.encode("w", array)
    assert encoding == expected
    assert sum(a.nbytes for a in stored.values()) == {"csr": 20 + 6 * nonzero,
                                                      "bitmask": 50 + 4 * nonzero,
                                                      "dense": 1600}[expected]  # fmt: skip


@pytest.mark.parametrize("encoding", ["csr", "bitmask"])
def test_sparse_encodings_give_back_the_same_bits(encoding):
    rng = np.random.default_rng(1)
    array = np.where(rng.random((3, 5, 70)) < (0.02 if encoding == "csr" else 0.4),
                     rng.normal(size=(3, 5, 70)), 0.0).astype(np.float32)  # fmt: skip
    array[0, 0, :3] = [-0.0, np.nan, np.inf]
    chosen, stored = archive.encode("w", array)
    assert chosen == encoding
    back = archive.decode("w", chosen, array.shape, array.dtype, stored)
    np.testing.assert_array_equal(back.view(np.uint32), array.view(np.uint32))


@pytest.mark.numerics
def test_the_gaussian_predictive_matches_a_numpy_monte_carlo():
    layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))

    class Flat(nnx.Module):
        def __init__(self):
            self.layer = layer

        def __call__(self, x):
            return self.layer(x.reshape(x.shape[0], -1))

    module = Flat()
    x = np.array([[[[1.0]], [[-2.0]]], [[[0.5]], [[0.3]]]], np.float32)  # (2, 2, 1, 1)
    loc_k, loc_b = np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])
    sd_k, sd_b = np.full((2, 3), 1.0, np.float32), np.array([0.5, 0.0, 2.0], np.float32)
    scales = {("layer", "kernel"): sd_k, ("layer", "bias"): sd_b}
    got = export.predictive_probs(module, scales, x, key=jax.random.key(0), samples=4000)
    rng = np.random.default_rng(0)
    n = 200_000
    w = loc_k + sd_k * rng.standard_normal((n, 2, 3))
    b = loc_b + sd_b * rng.standard_normal((n, 3))
    logits = np.einsum("i,nij->nj", x.reshape(2, 2)[0], w) + b, \
        np.einsum("i,nij->nj", x.reshape(2, 2)[1], w) + b  # fmt: skip
    for i, z in enumerate(logits):
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        se = p.std(axis=0) / np.sqrt(4000)
        np.testing.assert_array_less(np.abs(got[i] - p.mean(axis=0)), 5 * se + 1e-3)
    point = export.predictive_probs(module, {}, x, key=jax.random.key(0), samples=3)
    np.testing.assert_allclose(point, jax.nn.softmax(module(jnp.asarray(x)), axis=-1), rtol=1e-6)


# ---------------------------------------------------------------- from a real run


@pytest.fixture(scope="module")
def exported_run(tiny_run, tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("export") / "tiny"
    report = export.export_run(tiny_run, out, posterior=True, sparse="always", data_dir=data_dir)
    source = export.read_run(tiny_run, data_dir=data_dir)
    return report, source, out


def test_a_run_exports_its_final_posterior_median(exported_run, tiny_run):
    _, source, _ = exported_run
    with np.load(tiny_run / "posterior.npz") as saved:
        layers = [str(x) for x in saved["layers"]]
        view = build_layer_view(source.module, source.input_shape)
        matrices = view.matrices(nnx.state(source.module, nnx.Param))
        for layer in layers:
            np.testing.assert_allclose(np.asarray(matrices[layer]), saved[f"weight/{layer}"],
                                       rtol=1e-6, atol=1e-12)  # fmt: skip
            np.testing.assert_array_equal(source.masks[layer], saved[f"mask/{layer}"])


def test_a_run_export_equals_the_masked_run_network_and_round_trips(exported_run, data_dir):
    report, source, out = exported_run
    x = jnp.asarray(data.load("mnist_mini", image_size=28, data_dir=data_dir).test.images[:200])
    view = build_layer_view(source.module, source.input_shape)
    params = nnx.state(source.module, nnx.Param)
    masked = nnx.clone(source.module)
    nnx.update(masked, view.write(params, {k: jnp.where(source.masks[k], v, 0.0)
                                           for k, v in view.matrices(params).items()}))
    reference = np.asarray(masked(x))
    loaded = export.load(out, sparse=False)
    saved, kept = parameters(loaded), parameters(report.exported.module)
    assert saved.keys() == kept.keys()
    for key in saved:  # bit for bit
        assert saved[key].dtype == kept[key].dtype
        np.testing.assert_array_equal(saved[key].view(np.uint32), kept[key].view(np.uint32))
    tolerance = 1e-5 * np.abs(reference).max()
    np.testing.assert_allclose(np.asarray(loaded(x)), reference, atol=tolerance, rtol=0)
    sparse = export.load(out)
    assert any(isinstance(m, export.SparseLinear) for _, m in nnx.iter_modules(sparse))
    np.testing.assert_allclose(np.asarray(sparse(x)), reference, atol=tolerance, rtol=0)
    scales = export.load_scales(out)
    assert set(scales) <= {p for p, _ in nnx.to_flat_state(nnx.state(loaded, nnx.Param))}
    kernel = ("hidden", 1, "kernel")
    pruned = np.asarray(loaded.hidden[1].kernel[...]) == 0
    assert (scales[kernel][pruned] == 0).all() and (scales[kernel][~pruned] > 0).all()


def test_the_export_command_prints_a_line_per_layer(tiny_run, tmp_path, capsys, data_dir):
    code = main(["export", str(tiny_run), "--out", str(tmp_path / "e"), "--sparse", "never",
                 "--format", "npz", "--data-dir", str(data_dir)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    for layer in ("hidden.0", "hidden.1", "head"):
        assert f"\n{layer}: " in "\n" + out
    assert export.read_description(tmp_path / "e")["file_format"] == "npz"
    assert (tmp_path / "e" / "weights.npz").is_file()


def test_the_same_run_exports_to_the_same_files(tiny_run, tmp_path, capsys, data_dir):
    """Issue 38: ``--sparse auto`` was the default and decided by a timing taken in the
    process, so two exports of one run could differ in architecture.json; the default now
    decides without one."""
    for name in ("a", "b"):
        assert main(["export", str(tiny_run), "--out", str(tmp_path / name),
                     "--data-dir", str(data_dir)]) == 0  # fmt: skip
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    description = export.read_description(tmp_path / "a")
    assert description["sparse_layers"] == []
    assert not any(" us" in line for line in description["compute"])  # no timing decided it


def test_bad_export_input_exits_2_with_one_line(tiny_run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_run, unfinished)
    (unfinished / "summary.json").unlink()
    (tmp_path / "file").write_text("x")
    cases = [
        ([str(tmp_path), "--out", str(tmp_path / "a")], "not a bmr-jax run folder"),
        ([str(unfinished), "--out", str(tmp_path / "b")], "the run is not finished"),
        ([str(tiny_run), "--out", str(tmp_path / "file" / "sub")], "cannot"),
        ([str(tmp_path / "e"), "--out", str(tmp_path / "c"), "--batch", "0"], "--batch"),
    ]
    for argv, message in cases:
        assert main(["export", *argv, "--sparse", "never"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    with pytest.raises(export.ExportError, match="not a bmr-jax export"):
        export.load(tmp_path)


def _user_mlp():
    """A user's Flax MLP, as examples/prune_flax.py writes it: no ``activation`` attribute,
    the ReLU a function between the layers of an ``nnx.Sequential``."""
    return nnx.Sequential(lambda x: x.reshape(len(x), -1),
                          nnx.Linear(784, 30, rngs=nnx.Rngs(0)), nnx.relu,
                          nnx.Linear(30, 10, rngs=nnx.Rngs(1)))  # fmt: skip


def _numpy_forward(params, masks, x):
    """The masked MLP by hand: relu(x W1 + b1) W2 + b2 with the pruned entries zero."""
    layer = {i: {k: np.asarray(params["layers"][i][k][...]) * np.asarray(masks["layers"][i][k][...])
                 for k in ("kernel", "bias")} for i in (1, 3)}  # fmt: skip
    hidden = np.maximum(x.reshape(len(x), -1) @ layer[1]["kernel"] + layer[1]["bias"], 0)
    return hidden @ layer[3]["kernel"] + layer[3]["bias"]


def test_a_users_sequential_mlp_exports_from_the_optimisers_masks(images):
    """The masks an optax pruning wrapper keeps (a pytree like the parameters,
    ``bmr_jax.bmr.pruning``) with 12 of 30 hidden units pruned whole: the export has 18, the
    classifier reads 18 inputs (+ bias), and its logits are the masked network's computed in
    numpy. Before, nothing was removed (no ``activation`` attribute) and such masks were
    refused."""
    import optax

    from bmr_jax.bmr import pruning

    model = _user_mlp()
    params = nnx.state(model, nnx.Param)
    wrapped = pruning.prune_by_score(optax.sgd(0.1), score=pruning.magnitude,
                                     schedule=lambda block: 0.0, every=1)  # fmt: skip
    masks = wrapped.init(params).masks
    dead = np.zeros(30, bool)
    dead[::5] = dead[1::5] = True  # 12 units
    masks["layers"][1]["kernel"] = nnx.Param(jnp.asarray(np.broadcast_to(~dead, (784, 30))))
    masks["layers"][1]["bias"] = nnx.Param(jnp.asarray(~dead))
    masks["layers"][3]["kernel"] = nnx.Param(jnp.asarray(np.random.default_rng(0).random((30, 10))
                                                         > 0.3))  # fmt: skip
    out = export.export_network(model, (28, 28, 1), masks, net="users_mlp", preset="-",
                                num_classes=10, sequential=True)  # fmt: skip
    assert [(c.before, c.after) for c in out.layers] == [((30, 785), (18, 785)),
                                                         ((10, 31), (10, 19))]  # fmt: skip
    x = np.asarray(images[28], np.float32)
    np.testing.assert_allclose(np.asarray(out.module(jnp.asarray(x))),
                               _numpy_forward(params, masks, x), rtol=1e-4, atol=1e-4)  # fmt: skip


class _TwoLayers(nnx.Module):
    """A user's module of its own: nothing says what lies between its layers."""

    def __init__(self):
        self.first = nnx.Linear(784, 30, rngs=nnx.Rngs(0))
        self.second = nnx.Linear(30, 10, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.second(jnp.tanh(self.first(x.reshape(len(x), -1))))


def test_an_unknown_activation_warns_and_a_given_one_removes_the_units(images):
    """A module of the user's own with 10 of 30 hidden units pruned: without an activation
    the export cannot know the units output 0, keeps them and says so; with
    ``activation=jnp.tanh`` it removes them and computes the same logits."""
    model = _TwoLayers()
    view = build_layer_view(model, (28, 28, 1))
    masks = {"first": np.ones((30, 785), bool), "second": np.ones((10, 31), bool)}
    masks["first"][:10] = False
    args = dict(net="two_layers", preset="-", num_classes=10, sequential=True)
    with pytest.warns(UserWarning, match=r"units of first \(10 units\) unused"):
        kept = export.export_network(model, (28, 28, 1), masks, **args)
    assert kept.layers[0].after == (30, 785)
    removed = export.export_network(model, (28, 28, 1), masks, activation=jnp.tanh, **args)
    assert [c.after for c in removed.layers] == [(20, 785), (10, 21)]
    x = jnp.asarray(images[28])
    np.testing.assert_allclose(np.asarray(removed.module(x)), np.asarray(kept.module(x)),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert view.names() == ["first", "second"]
    with pytest.raises(ValueError, match="masks: no layer 'hidden.0'; the layers are first"):
        export.export_network(model, (28, 28, 1), {"hidden.0": masks["first"]}, **args)
    with pytest.raises(ValueError, match=r"masks\['first'\]: shape \(785, 30\)"):
        export.export_network(model, (28, 28, 1), {"first": masks["first"].T}, **args)
