"""Head-level structured BMR: an attention head scored and removed as one unit, its output
projection's columns included.

References: METHOD.md 4.2's full-covariance formula (``delta_f_mvn``) on each row's marginal
for the column kernel, and a hand-built posterior whose one head has no evidence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmr_jax import data, methods
from bmr_jax.bayes.layers import build_layer_view
from bmr_jax.bayes.units import unit_links
from bmr_jax.bmr import Evidence, delta_f_matrix_normal_columns, delta_f_mvn
from bmr_jax.bmr.reduce import make_unit_reduce
from bmr_jax.nets import create_net


def test_removing_columns_is_the_sum_over_rows_of_the_marginal_spike():
    rng = np.random.default_rng(0)
    rows, cols, s = 4, 7, 0.7
    mean = rng.normal(size=(rows, cols))
    row_var = rng.uniform(0.05, 0.3, size=rows)
    a = rng.normal(size=(cols, cols))
    col_cov = a @ a.T / cols + 0.1 * np.eye(cols)
    columns = np.array([1, 3, 4])
    got = delta_f_matrix_normal_columns(jnp.asarray(mean), jnp.asarray(row_var),
                                        jnp.asarray(col_cov), s, columns)  # fmt: skip
    sub = col_cov[np.ix_(columns, columns)]
    expected = sum(
        float(delta_f_mvn(jnp.asarray(mean[i, columns]),
                          jnp.asarray(np.linalg.inv(row_var[i] * sub)), s,
                          jnp.zeros(3))[0])
        for i in range(rows)
    )  # fmt: skip
    np.testing.assert_allclose(float(got), expected, rtol=2e-4)


def _vit_posterior(view, rng, dead_head, head_dim):
    """Confident posteriors (|mean| 3, variance 1e-2) everywhere but head ``dead_head`` of the
    first attention: zero means there, in its q/k/v rows and its output columns."""
    posterior = {}
    for spec in view.layers:
        mean = 3.0 * np.sign(rng.normal(size=spec.shape))
        rows = slice(dead_head * head_dim, (dead_head + 1) * head_dim)
        if spec.name.startswith("blocks.0.attention.") and not spec.name.endswith("out"):
            mean[rows] = 0.0
        if spec.name == "blocks.0.attention.out":
            mean[:, rows] = 0.0
        posterior[spec.name] = (jnp.asarray(mean, jnp.float32),
                                jnp.full(spec.rows, 0.1, jnp.float32),
                                jnp.eye(spec.cols, dtype=jnp.float32) * 0.1)  # fmt: skip
    return posterior


def test_a_head_without_evidence_goes_with_its_output_columns():
    module = create_net("vit", 10, (32, 32, 1), "small", rngs=nnx.Rngs(0))
    view = build_layer_view(module, (32, 32, 1))
    links = unit_links(module, view, sequential=False)
    heads = tuple(link for link in links if link.kind == "head")
    assert len(heads) == 4 and heads[0].unit_rows == 16
    reduce = make_unit_reduce(view, Evidence(), heads=heads)
    masks = {s.name: jnp.ones(s.shape, bool) for s in view.layers}
    result = jax.jit(reduce)(_vit_posterior(view, np.random.default_rng(1), 2, 16), masks, 2)
    dead = slice(32, 48)
    for part in ("query", "key", "value"):
        m = np.asarray(result.masks[f"blocks.0.attention.{part}"])
        assert not m[dead].any() and m[:32].all() and m[48:].all(), part
    out = np.asarray(result.masks["blocks.0.attention.out"])
    assert not out[:, dead].any() and out[:, :32].all() and out[:, 48:].all()
    for name, m in result.masks.items():
        if not name.startswith("blocks.0.attention."):
            assert np.asarray(m).all(), name
    head_df = np.asarray(result.delta_f["blocks.0.attention heads"])
    assert head_df.shape == (4,) and head_df[2] > 0 and (np.delete(head_df, 2) < 0).all()


@pytest.mark.slow
def test_bmr_units_removes_a_vit_head_through_the_between_blocks_step():
    """The whole path (methods.build finds the heads, the jitted units step decides): a head
    whose query, key, value rows and output columns sit at 0 goes, the others stay (about
    90 s on a 2-core CPU, mostly compiling the matrix-normal read-out)."""
    dataset = data.load("mnist_mini", image_size=32)
    setup = methods.build("bmr_units", dataset, net="vit", preset="small", seed=3,
                          bmr=methods.BmrSettings(rule="evidence"))  # fmt: skip
    state = methods.initial_state(setup)
    params = setup.trainer.params(state.train)
    prefix = "blocks.0.attention"
    zeroed = {f"{prefix}.{p}/z/loc": params[f"{prefix}.{p}/z/loc"].at[16:32].set(0.0)
              for p in ("query", "key", "value")}  # fmt: skip
    zeroed[f"{prefix}.out/z/loc"] = params[f"{prefix}.out/z/loc"].at[:, 16:32].set(0.0)
    train = setup.trainer.set_params(state.train, zeroed)
    _, masks, _, _ = setup.between(train, state.masks, state.gamma, 2, jax.random.key(0))
    for part in ("query", "key", "value"):
        alive = np.asarray(masks[f"{prefix}.{part}"]).any(axis=1).reshape(4, 16).any(axis=1)
        np.testing.assert_array_equal(alive, [True, False, True, True])
    read = np.asarray(masks[f"{prefix}.out"]).any(axis=0)[:64].reshape(4, 16).any(axis=1)
    np.testing.assert_array_equal(read, [True, False, True, True])
