"""The network registry: ``name -> constructor(num_classes, input_shape, preset, rngs)``.

Every network takes NHWC image batches and returns class logits. Each has two presets:
``paper`` (the sizes of METHOD.md section 6 / the pruning literature) and ``small`` (narrower,
same architecture, trains on a 2-core CPU in minutes). See :data:`PRESET_DOCS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flax import nnx

from bmr_jax.errors import UnknownNameError
from bmr_jax.nets.lenet import LENET5_CAFFE_PRESETS, LeNet, lenet5_config
from bmr_jax.nets.mixer import MIXER_PRESETS, Mixer
from bmr_jax.nets.mlp import LENET_300_100_PRESETS, MLP, MLP_PRESETS
from bmr_jax.nets.vit import VIT_PRESETS, ViT
from bmr_jax.registry import Registry

PRESETS = ("paper", "small")


@dataclass(frozen=True)
class NetSpec:
    """A registered network.

    Attributes:
      name: registry name.
      build: ``build(num_classes, input_shape, preset, rngs, dropout=0.0) -> nnx.Module``.
      image_size: the square size inputs must be padded to (``None``: any size as stored).
      presets: preset name -> one-line description.
      sequential: each weight layer reads the previous layer's units directly (no residual
        streams), so a dead unit kills the weights that read it (see ``bmr.sparsity``).
    """

    name: str
    build: Callable[..., nnx.Module]
    image_size: int | None
    presets: dict[str, str]
    sequential: bool = True


NETS: Registry[NetSpec] = Registry("network")


def register_net(spec: NetSpec, *, overwrite: bool = False) -> NetSpec:
    """Adds a network to the registry (``overwrite=True`` to replace an existing name)."""
    return NETS.register(spec.name, spec, overwrite=overwrite)


def list_nets() -> list[str]:
    """Registered network names."""
    return NETS.names()


def get_net_spec(name: str) -> NetSpec:
    """The spec registered as ``name``; :class:`UnknownNameError` if none."""
    return NETS.get(name)


def create_net(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    preset: str = "paper",
    *,
    rngs: nnx.Rngs,
    dropout: float = 0.0,
) -> nnx.Module:
    """Builds network ``name`` for ``input_shape = (H, W, C)`` images and ``num_classes``.

    Args:
      preset: ``"paper"`` or ``"small"``.
      dropout: dropout rate (0 = off, the default; the paper's Flat-MAP baseline uses 0.2).
    """
    spec = get_net_spec(name)
    if preset not in spec.presets:
        raise UnknownNameError(f"preset of {name}", preset, list(spec.presets))
    return spec.build(num_classes, tuple(input_shape), preset, rngs, dropout=dropout)


def _table_builder(cls, presets, name):
    def build(num_classes, input_shape, preset, rngs, dropout=0.0):
        return cls(presets[preset], num_classes, input_shape, rngs=rngs, dropout=dropout, name=name)

    return build


def _build_lenet5(num_classes, input_shape, preset, rngs, dropout=0.0):
    config = lenet5_config(preset, input_shape[-1])
    return LeNet(config, num_classes, input_shape, rngs=rngs, dropout=dropout, name="lenet5")


PRESET_DOCS = {
    "mlp": {
        "paper": "4 x 500 swish (1,149,010 parameters on 28x28x1, 10 classes)",
        "small": "4 x 100 swish (109,810 parameters on 28x28x1)",
    },
    "lenet5": {
        "paper": "conv 6/16/120 + dense 84, tanh, avg-pool (1 channel); 18/48/360 + 256 (3 ch.)",
        "small": "conv 6/16/120 + dense 84 whatever the channels (= paper on 1 channel)",
    },
    "lenet_300_100": {
        "paper": "dense 300-100, ReLU (266,610 parameters on MNIST)",
        "small": "dense 100-30, ReLU (81,840 parameters on MNIST)",
    },
    "lenet5_caffe": {
        "paper": "conv 20-50 (5x5, ReLU, max-pool) + dense 500 on 28x28 (431,080 parameters)",
        "small": "conv 10-20 + dense 100 (38,390 parameters on 28x28)",
    },
    "vit": {
        "paper": "patch 4, width 256, depth 6, 8 heads, MLP ratio 2 (3,186,954 on 32x32x1)",
        "small": "patch 4, width 64, depth 4, 4 heads, MLP ratio 2 (139,978 on 32x32x1)",
    },
    "mixer": {
        "paper": "patch 4, width 256, 6 blocks, token/channel hidden 512 (1,987,722 on 32x32x1)",
        "small": "patch 4, width 64, 4 blocks, token/channel hidden 128 (135,498 on 32x32x1)",
    },
}

register_net(NetSpec("mlp", _table_builder(MLP, MLP_PRESETS, "mlp"), None, PRESET_DOCS["mlp"]))
register_net(NetSpec("lenet5", _build_lenet5, 32, PRESET_DOCS["lenet5"]))
register_net(
    NetSpec(
        "lenet_300_100",
        _table_builder(MLP, LENET_300_100_PRESETS, "lenet_300_100"),
        None,
        PRESET_DOCS["lenet_300_100"],
    )
)
register_net(
    NetSpec(
        "lenet5_caffe",
        _table_builder(LeNet, LENET5_CAFFE_PRESETS, "lenet5_caffe"),
        None,
        PRESET_DOCS["lenet5_caffe"],
    )
)
register_net(NetSpec("vit", _table_builder(ViT, VIT_PRESETS, "vit"), 32, PRESET_DOCS["vit"], False))
register_net(
    NetSpec("mixer", _table_builder(Mixer, MIXER_PRESETS, "mixer"), 32, PRESET_DOCS["mixer"], False)
)
