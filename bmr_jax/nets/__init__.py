"""The model zoo: Flax NNX networks and their registry.

from flax import nnx
from bmr_jax import nets
net = nets.create_net("lenet5", num_classes=10, input_shape=(32, 32, 1), rngs=nnx.Rngs(0))
"""

from bmr_jax.nets.base import count_params
from bmr_jax.nets.lenet import LeNet, LeNetConfig
from bmr_jax.nets.mixer import Mixer, MixerConfig
from bmr_jax.nets.mlp import MLP, MLPConfig
from bmr_jax.nets.registry import (
    NETS,
    PRESET_DOCS,
    PRESETS,
    NetSpec,
    create_net,
    get_net_spec,
    list_nets,
    register_net,
)
from bmr_jax.nets.vit import ViT, ViTConfig

__all__ = [
    "NETS",
    "LeNet",
    "LeNetConfig",
    "MLP",
    "MLPConfig",
    "Mixer",
    "MixerConfig",
    "NetSpec",
    "PRESETS",
    "PRESET_DOCS",
    "ViT",
    "ViTConfig",
    "count_params",
    "create_net",
    "get_net_spec",
    "list_nets",
    "register_net",
]
