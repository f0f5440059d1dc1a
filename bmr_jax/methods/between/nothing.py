"""The between-blocks step of the methods without BMR: nothing changes."""

from __future__ import annotations

from bmr_jax.methods.between import BETWEEN_BLOCKS


def make_nothing(method, trainer):
    """``step`` returning its inputs (Flat-MAP, Flat-FF, Tiered-FF)."""

    def step(state, masks, gamma, block, key):
        return state, masks, gamma, {}

    return step


BETWEEN_BLOCKS.register("nothing", make_nothing)
