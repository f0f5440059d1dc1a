"""The paper's methods and the block loop that runs them.

- :mod:`~bmr_jax.methods.table`: the methods (prior, guide, settings, between-blocks step);
- :mod:`~bmr_jax.methods.settings`: the ``train``, ``eval`` and ``bmr`` settings;
- :mod:`~bmr_jax.methods.between`: what a method does between blocks (one protocol);
- :mod:`~bmr_jax.methods.setup`: a method built on a dataset (:func:`build`);
- :mod:`~bmr_jax.methods.loop`: the block loop (:func:`run`) and its state.
"""

from bmr_jax.methods.between import BETWEEN_BLOCKS, BetweenBlocks, make_between_blocks
from bmr_jax.methods.loop import (
    NonFiniteError,
    RunHooks,
    RunState,
    RunStopped,
    initial_state,
    run,
    run_keys,
)
from bmr_jax.methods.settings import BmrSettings, EvalSettings, GuideSettings, TrainSettings
from bmr_jax.methods.setup import Setup, build
from bmr_jax.methods.table import METHODS, Method, configured

__all__ = [
    "BETWEEN_BLOCKS",
    "BetweenBlocks",
    "BmrSettings",
    "EvalSettings",
    "GuideSettings",
    "METHODS",
    "Method",
    "NonFiniteError",
    "RunHooks",
    "RunState",
    "RunStopped",
    "Setup",
    "TrainSettings",
    "build",
    "configured",
    "initial_state",
    "make_between_blocks",
    "run",
    "run_keys",
]
