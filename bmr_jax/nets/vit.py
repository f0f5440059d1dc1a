"""Vision Transformer (Dosovitskiy et al. 2021) as used in the BMR paper (METHOD.md section 6).

Non-overlapping patches (a conv with kernel = stride = patch) embedded to ``width``, a learned
class token and learned position embeddings, ``depth`` pre-LayerNorm encoder blocks
``x + MHA(LN(x))``, ``x + MLP(LN(x))`` with a GELU MLP of hidden size ``mlp_ratio * width``,
a final LayerNorm, and a linear head on the class token.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from bmr_jax.errors import ShapeMismatchError
from bmr_jax.nets import initializers
from bmr_jax.nets.base import apply_dropout, check_input, maybe_dropout
from bmr_jax.nets.initializers import DENSE, NORM


@dataclass(frozen=True)
class ViTConfig:
    patch: int
    width: int
    depth: int
    heads: int
    mlp_ratio: int


VIT_PRESETS = {
    "paper": ViTConfig(patch=4, width=256, depth=6, heads=8, mlp_ratio=2),
    "small": ViTConfig(patch=4, width=64, depth=4, heads=4, mlp_ratio=2),
}


class PatchEmbedding(nnx.Module):
    """Splits NHWC images into ``patch x patch`` squares and embeds each linearly:
    ``(B, H, W, C) -> (B, H/patch * W/patch, width)``."""

    def __init__(self, input_shape, patch: int, width: int, *, rngs: nnx.Rngs, name: str):
        height, image_width, channels = input_shape
        if height % patch or image_width % patch:
            raise ShapeMismatchError(
                f"{name}: image size {height}x{image_width} is not divisible by patch {patch}"
            )
        self.num_patches = (height // patch) * (image_width // patch)
        self.proj = nnx.Conv(
            channels, width, (patch, patch), strides=(patch, patch), padding="VALID", **DENSE,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.proj(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class FeedForward(nnx.Module):
    """``Dense(hidden) -> GELU -> Dense(out)``, with optional dropout after each."""

    def __init__(self, features: int, hidden: int, *, rngs: nnx.Rngs, dropout: float = 0.0):
        self.fc1 = nnx.Linear(features, hidden, **DENSE, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, features, **DENSE, rngs=rngs)
        self.dropout = maybe_dropout(dropout, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = apply_dropout(self.dropout, nnx.gelu(self.fc1(x)))
        return apply_dropout(self.dropout, self.fc2(x))


class EncoderBlock(nnx.Module):
    """Pre-LN transformer block: ``x + MHA(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs, dropout: float = 0.0):
        width = config.width
        self.norm1 = nnx.LayerNorm(width, **NORM, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=config.heads,
            in_features=width,
            qkv_features=width,
            out_features=width,
            decode=False,
            deterministic=True,
            **DENSE,
            rngs=rngs,
        )
        self.norm2 = nnx.LayerNorm(width, **NORM, rngs=rngs)
        self.mlp = FeedForward(width, config.mlp_ratio * width, rngs=rngs, dropout=dropout)
        self.dropout = maybe_dropout(dropout, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + apply_dropout(self.dropout, self.attention(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


class ViT(nnx.Module):
    """Vision Transformer classifier (see the module docstring)."""

    def __init__(
        self,
        config: ViTConfig,
        num_classes: int,
        input_shape: tuple[int, int, int],
        *,
        rngs: nnx.Rngs,
        dropout: float = 0.0,
        name: str = "vit",
    ):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.embed = PatchEmbedding(input_shape, config.patch, config.width, rngs=rngs, name=name)
        init = initializers.normal(0.02)
        self.cls_token = nnx.Param(initializers.zeros(None, (1, 1, config.width)))
        self.positions = nnx.Param(
            init(rngs.params(), (1, self.embed.num_patches + 1, config.width))
        )
        self.blocks = nnx.List(
            [EncoderBlock(config, rngs=rngs, dropout=dropout) for _ in range(config.depth)]
        )
        self.norm = nnx.LayerNorm(config.width, **NORM, rngs=rngs)
        self.head = nnx.Linear(config.width, num_classes, **DENSE, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        check_input(self.name, self.input_shape, x)
        x = self.embed(x)
        cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.positions[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])
