"""Fully connected networks: the paper's MLP (4 x 500, swish) and LeNet-300-100.

LeNet-300-100: LeCun et al. (1998), the fully connected MNIST benchmark of the pruning
literature (Han et al. 2015; Molchanov et al. 2017), ReLU hidden units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
from flax import nnx

from bmr_jax.nets.base import ACTIVATIONS, apply_dropout, check_input, maybe_dropout
from bmr_jax.nets.initializers import DENSE


@dataclass(frozen=True)
class MLPConfig:
    """Hidden layer widths and activation of a fully connected network."""

    hidden: tuple[int, ...]
    activation: str


MLP_PRESETS = {
    "paper": MLPConfig(hidden=(500, 500, 500, 500), activation="swish"),
    "small": MLPConfig(hidden=(100, 100, 100, 100), activation="swish"),
}
LENET_300_100_PRESETS = {
    "paper": MLPConfig(hidden=(300, 100), activation="relu"),
    "small": MLPConfig(hidden=(100, 30), activation="relu"),
}


class MLP(nnx.Module):
    """Flattens NHWC images and applies dense layers; the last one gives the class logits.

    Dropout (if ``dropout > 0``) follows every hidden activation.
    """

    def __init__(
        self,
        config: MLPConfig,
        num_classes: int,
        input_shape: tuple[int, int, int],
        *,
        rngs: nnx.Rngs,
        dropout: float = 0.0,
        name: str = "mlp",
    ):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.activation = ACTIVATIONS[config.activation]
        widths = (math.prod(input_shape), *config.hidden)
        self.hidden = nnx.List(
            [nnx.Linear(a, b, **DENSE, rngs=rngs)
             for a, b in zip(widths[:-1], widths[1:], strict=True)]  # fmt: skip
        )
        self.head = nnx.Linear(widths[-1], num_classes, **DENSE, rngs=rngs)
        self.dropout = maybe_dropout(dropout, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(self.name, self.input_shape, x)
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = apply_dropout(self.dropout, self.activation(layer(x)))
        return self.head(x)
