"""A Flax NNX network as a NumPyro model: prior over the layer matrices, likelihood over data.

METHOD.md section 2. For every Bayesian layer ``l`` of the layer view the model samples
``Z_l ~ N(0, I)`` (site ``"{layer}/z"``, shape ``(rows, cols)``), takes the prior's scales, and
sets ``W_l = scale_l * gamma_l * Z_l`` with ``gamma_l`` the pruning multipliers passed in as data
(1, or a tiny value for pruned entries: changing them never recompiles). Parameters that are not
Bayesian (LayerNorm, class token, position table, non-Bayesian layers) are ``numpyro.param``
point estimates named by their dotted path. The network is then called with these parameters,
and the likelihood observes the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from flax import nnx

from bmr_jax.bayes.layers import LayerView, build_layer_view, from_matrix, to_matrix
from bmr_jax.bayes.likelihoods import CategoricalLikelihood
from bmr_jax.bayes.priors import Prior, layer_scales_at

PRUNED_GAMMA = 1e-12  # METHOD.md 2.1: the prior scale multiplier of a pruned weight


def z_site(layer: str) -> str:
    return f"{layer}/z"


def _dotted(path: tuple) -> str:
    return ".".join(map(str, path))


@dataclass(frozen=True, eq=False)
class BayesianNetwork:
    """Everything fixed about a Bayesian network: structure, prior, likelihood, initial values.

    Build it with :meth:`from_module`. Its :meth:`model` is the NumPyro model
    ``model(x, y, gamma, num_data)``.
    """

    view: LayerView
    prior: Prior
    likelihood: Any
    train_graphdef: Any
    eval_graphdef: Any
    rest: Any  # non-Param state (dropout RNG)
    initial_params: dict  # dotted path -> initial value of every nnx.Param leaf
    param_paths: tuple  # Param leaf paths, in the order of nnx.to_flat_state
    has_dropout: bool = False
    layer_leaves: dict = field(default_factory=dict)  # layer name -> (kernel path, bias path)
    other_prior_scale: float | None = None

    @classmethod
    def from_module(
        cls,
        module: nnx.Module,
        input_shape: tuple[int, ...],
        prior: Prior,
        likelihood=None,
        *,
        bayesian=None,
        prunable=None,
        prune_classifier: bool = False,
        other_prior_scale: float | None = None,
    ) -> BayesianNetwork:
        """Wraps ``module`` (its current parameters become the initial values).

        Args:
          bayesian: predicate on layer names: which layers are Bayesian
            (see :func:`build_layer_view`).
          prunable: predicate on layer names: which Bayesian layers BMR may prune.
          prune_classifier: the classifier (the last layer) may be pruned too; METHOD.md 4.4
            keeps it whole (the default).
          other_prior_scale: ``None`` (default): parameters outside the Bayesian layers are
            point estimates without a prior; a float: they are latent with a Gaussian prior of
            this standard deviation (centred on 1 for LayerNorm scales, else 0), so every guide
            gives them a posterior too. They are never pruned.
        """
        view = build_layer_view(module, input_shape, bayesian=bayesian, prunable=prunable,
                                prune_classifier=prune_classifier)
        module.train()
        train_graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        module.eval()
        eval_graphdef, _, _ = nnx.split(module, nnx.Param, ...)
        module.train()
        flat = list(nnx.to_flat_state(params))
        paths = tuple(path for path, _ in flat)
        initial = {_dotted(path): variable[...] for path, variable in flat}
        leaves = {
            s.name: (s.path + ("kernel",), s.path + ("bias",) if s.has_bias else None)
            for s in view.bayesian_layers
        }
        has_dropout = bool(jax.tree.leaves(nnx.state(module, nnx.RngState)))
        return cls(
            view=view,
            prior=prior,
            likelihood=likelihood or CategoricalLikelihood(),
            train_graphdef=train_graphdef,
            eval_graphdef=eval_graphdef,
            rest=rest,
            initial_params=initial,
            param_paths=paths,
            has_dropout=has_dropout,
            layer_leaves=leaves,
            other_prior_scale=other_prior_scale,
        )

    # ----------------------------------------------------------------- the model

    def network_params(self, gamma: Mapping[str, jax.Array]) -> nnx.State:
        """Samples the prior and returns the network's ``nnx.Param`` state (pure arrays)."""
        scales = self.prior.scales(self.view)
        matrices = {}
        for spec in self.view.bayesian_layers:
            z = numpyro.sample(z_site(spec.name), self.prior.z_distribution(spec))
            matrices[spec.name] = scales[spec.name] * gamma[spec.name] * z  # W = scale * gamma * Z
        return self.params_with(matrices)

    def params_with(self, matrices: Mapping[str, jax.Array]) -> nnx.State:
        """The network's ``nnx.Param`` state with every Bayesian layer's weights read from
        ``matrices`` (``{layer: (rows, cols)}``) and every other parameter from its own site."""
        values: dict[tuple, jax.Array] = {}
        for spec in self.view.bayesian_layers:
            kernel_path, bias_path = self.layer_leaves[spec.name]
            values[kernel_path], bias = from_matrix(spec, matrices[spec.name])
            if bias_path is not None:
                values[bias_path] = bias
        for path in self.param_paths:
            if path not in values:
                values[path] = self._other_param(path)
        return nnx.from_flat_state([(path, values[path]) for path in self.param_paths])

    def _other_param(self, path: tuple) -> jax.Array:
        """A parameter outside the Bayesian layers (LayerNorm, tokens, positions, non-Bayesian
        layers): a point estimate, or with ``other_prior_scale`` a Gaussian latent centred on
        1 for LayerNorm scales and 0 otherwise."""
        name = _dotted(path)
        init = self.initial_params[name]
        if self.other_prior_scale is None:
            return numpyro.param(name, init)
        centre = 1.0 if path[-1] == "scale" else 0.0
        prior = dist.Normal(centre, self.other_prior_scale).expand(init.shape)
        return numpyro.sample(name, prior.to_event(init.ndim))

    def apply(self, params: nnx.State, x: jax.Array, *, train: bool) -> jax.Array:
        """The network's outputs for parameters ``params`` (dropout only when ``train``)."""
        return self.module_with(params, train=train)(x)

    def module_with(self, params: nnx.State, *, train: bool) -> nnx.Module:
        """A fresh copy of the network holding ``params``, in train or eval mode (its dropout
        reseeded from the model's key when ``train``)."""
        graphdef = self.train_graphdef if train else self.eval_graphdef
        module = nnx.merge(graphdef, params, self.rest, copy=True)
        if train and self.has_dropout:
            nnx.reseed(module, dropout=numpyro.prng_key())
        return module

    def model(self, x, y=None, gamma=None, num_data=None, train: bool = True):
        """The NumPyro model. ``gamma``: ``{layer: (rows, cols) multipliers}`` (default all 1);
        ``num_data``: size of the full training set (default: the batch)."""
        gamma = self.full_gamma() if gamma is None else gamma
        params = self.network_params(gamma)
        outputs = self.apply(params, x, train=train)
        self.likelihood(outputs, y, x.shape[0] if num_data is None else num_data)
        return outputs

    def initial_module(self) -> nnx.Module:
        """The network as an NNX module in eval mode, at its initial parameters."""
        state = nnx.from_flat_state([(p, self.initial_params[_dotted(p)])
                                     for p in self.param_paths])  # fmt: skip
        return nnx.merge(self.eval_graphdef, state, self.rest, copy=True)

    # ----------------------------------------------------------------- initial values

    def full_gamma(self) -> dict[str, jax.Array]:
        """Multipliers of an unpruned network: ones of every Bayesian layer's shape."""
        return {s.name: jnp.asarray(np.ones(s.shape, np.float32))  # no XLA program per shape
                for s in self.view.bayesian_layers}  # fmt: skip

    def init_latents(self) -> dict[str, jax.Array]:
        """Initial values of every latent site: the prior's scale initialisation, and
        ``Z = W_init / scale_init`` so that the network starts from its own initialisation."""
        values = dict(self.prior.init_values(self.view))
        if hasattr(self.likelihood, "init_values"):
            values.update(self.likelihood.init_values())
        if self.other_prior_scale is not None:
            layer_leaf_paths = {p for pair in self.layer_leaves.values() for p in pair if p}
            for path in self.param_paths:
                if path not in layer_leaf_paths:
                    values[_dotted(path)] = self.initial_params[_dotted(path)]
        scales = layer_scales_at(self.prior, self.view, values)
        for spec in self.view.bayesian_layers:  # in numpy: eager jnp is a program per shape
            kernel_path, bias_path = self.layer_leaves[spec.name]
            kernel = np.asarray(self.initial_params[_dotted(kernel_path)])
            bias = (None if bias_path is None
                    else np.asarray(self.initial_params[_dotted(bias_path)]))  # fmt: skip
            matrix = to_matrix(spec, kernel, bias)
            scale = np.broadcast_to(np.asarray(scales[spec.name]), spec.shape)
            values[z_site(spec.name)] = jnp.asarray(matrix / scale)
        return values
