"""LeNet-5 as in the BMR paper, and LeNet-5-Caffe of the pruning literature.

LeNet-5 (LeCun et al. 1998; METHOD.md section 6): three 5x5 valid convolutions, the first two
followed by 2x2 average pooling, then a dense hidden layer, tanh throughout. For 1-channel 32x32
inputs (Fashion-MNIST padded) the widths are 6/16/120 + 84 (61,706 parameters); for 3-channel
inputs (CIFAR) the paper widens them to 18/48/360 + 256.

LeNet-5-Caffe (the Caffe MNIST example; the benchmark net of Sparse VD, Molchanov et al. 2017,
and Bayesian Compression, Louizos et al. 2017): 20 and 50 5x5 valid convolutions each followed
by ReLU and 2x2 max pooling, dense 500 with ReLU. On 28x28 MNIST the flattened features are
50 * 4 * 4 = 800 (431,080 parameters); it therefore takes unpadded 28x28 images.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
from flax import nnx

from bmr_jax.errors import ShapeMismatchError
from bmr_jax.nets.base import ACTIVATIONS, apply_dropout, check_input, maybe_dropout
from bmr_jax.nets.initializers import DENSE

KERNEL = 5
POOL = 2


@dataclass(frozen=True)
class LeNetConfig:
    """Widths and non-linearities of a LeNet.

    Attributes:
      conv: output channels of each 5x5 valid convolution.
      dense: widths of the hidden dense layers after flattening.
      activation: non-linearity after every conv and hidden dense layer.
      pooling: ``"avg"`` or ``"max"``, 2x2 stride 2, after each of the first two convolutions.
    """

    conv: tuple[int, ...]
    dense: tuple[int, ...]
    activation: str
    pooling: str


LENET5_GRAY = LeNetConfig(conv=(6, 16, 120), dense=(84,), activation="tanh", pooling="avg")
LENET5_COLOUR = LeNetConfig(conv=(18, 48, 360), dense=(256,), activation="tanh", pooling="avg")


def lenet5_config(preset: str, channels: int) -> LeNetConfig:
    """``paper``: 6/16/120+84 for 1 channel, 18/48/360+256 for 3; ``small``: 6/16/120+84."""
    if preset == "small" or channels == 1:
        return LENET5_GRAY
    return LENET5_COLOUR


LENET5_CAFFE_PRESETS = {
    "paper": LeNetConfig(conv=(20, 50), dense=(500,), activation="relu", pooling="max"),
    "small": LeNetConfig(conv=(10, 20), dense=(100,), activation="relu", pooling="max"),
}


class LeNet(nnx.Module):
    """Convolutions (pooling after the first two), flatten, dense layers, linear head.

    Dropout (if ``dropout > 0``) follows the flattened conv features and every hidden dense
    activation.
    """

    def __init__(
        self,
        config: LeNetConfig,
        num_classes: int,
        input_shape: tuple[int, int, int],
        *,
        rngs: nnx.Rngs,
        dropout: float = 0.0,
        name: str = "lenet",
    ):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.activation = ACTIVATIONS[config.activation]
        self.pool = {"avg": nnx.avg_pool, "max": nnx.max_pool}[config.pooling]
        height, width, channels = input_shape
        convs = []
        for i, features in enumerate(config.conv):
            convs.append(nnx.Conv(channels, features, (KERNEL, KERNEL), padding="VALID", **DENSE,
                                  rngs=rngs))
            height, width, channels = height - KERNEL + 1, width - KERNEL + 1, features
            if i < 2:
                height, width = height // POOL, width // POOL
            if height < 1 or width < 1:
                raise ShapeMismatchError(
                    f"{name}: inputs of shape {tuple(input_shape)} are too small for "
                    f"{len(config.conv)} 5x5 convolutions with pooling"
                )
        self.convs = nnx.List(convs)
        widths = (height * width * channels, *config.dense)
        self.dense = nnx.List(
            [nnx.Linear(a, b, **DENSE, rngs=rngs)
             for a, b in zip(widths[:-1], widths[1:], strict=True)]  # fmt: skip
        )
        self.head = nnx.Linear(widths[-1], num_classes, **DENSE, rngs=rngs)
        self.dropout = maybe_dropout(dropout, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(self.name, self.input_shape, x)
        for i, conv in enumerate(self.convs):
            x = self.activation(conv(x))
            if i < 2:
                x = self.pool(x, window_shape=(POOL, POOL), strides=(POOL, POOL))
        x = apply_dropout(self.dropout, x.reshape(x.shape[0], -1))
        for layer in self.dense:
            x = apply_dropout(self.dropout, self.activation(layer(x)))
        return self.head(x)
