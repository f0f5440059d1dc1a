"""MLP-Mixer (Tolstikhin et al. 2021) as used in the BMR paper (METHOD.md section 6).

Patch embedding as in the ViT, then ``blocks`` Mixer layers: token mixing
``x + MLP_tokens(LN(x)^T)^T`` (an MLP across the patch axis, shared over channels) and channel
mixing ``x + MLP_channels(LN(x))``, GELU MLPs; a final LayerNorm, mean over patches, linear head.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
from flax import nnx

from bmr_jax.nets.base import check_input
from bmr_jax.nets.initializers import DENSE, NORM
from bmr_jax.nets.vit import FeedForward, PatchEmbedding


@dataclass(frozen=True)
class MixerConfig:
    patch: int
    width: int
    blocks: int
    token_hidden: int
    channel_hidden: int


MIXER_PRESETS = {
    "paper": MixerConfig(patch=4, width=256, blocks=6, token_hidden=512, channel_hidden=512),
    "small": MixerConfig(patch=4, width=64, blocks=4, token_hidden=128, channel_hidden=128),
}


class MixerBlock(nnx.Module):
    """One Mixer layer: token mixing then channel mixing, each pre-LN with a residual."""

    def __init__(self, config: MixerConfig, num_tokens: int, *, rngs: nnx.Rngs, dropout=0.0):
        self.norm1 = nnx.LayerNorm(config.width, **NORM, rngs=rngs)
        self.token_mlp = FeedForward(num_tokens, config.token_hidden, rngs=rngs, dropout=dropout)
        self.norm2 = nnx.LayerNorm(config.width, **NORM, rngs=rngs)
        self.channel_mlp = FeedForward(
            config.width, config.channel_hidden, rngs=rngs, dropout=dropout
        )

    def __call__(self, x: jax.Array) -> jax.Array:  # x: (B, tokens, width)
        x = x + self.token_mlp(self.norm1(x).swapaxes(1, 2)).swapaxes(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nnx.Module):
    """MLP-Mixer classifier (see the module docstring)."""

    def __init__(
        self,
        config: MixerConfig,
        num_classes: int,
        input_shape: tuple[int, int, int],
        *,
        rngs: nnx.Rngs,
        dropout: float = 0.0,
        name: str = "mixer",
    ):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.embed = PatchEmbedding(input_shape, config.patch, config.width, rngs=rngs, name=name)
        self.blocks = nnx.List(
            [
                MixerBlock(config, self.embed.num_patches, rngs=rngs, dropout=dropout)
                for _ in range(config.blocks)
            ]
        )
        self.norm = nnx.LayerNorm(config.width, **NORM, rngs=rngs)
        self.head = nnx.Linear(config.width, num_classes, **DENSE, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(self.name, self.input_shape, x)
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(axis=1))
