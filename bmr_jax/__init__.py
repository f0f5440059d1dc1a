"""bmr-jax: Bayesian sparsification of deep neural networks with Bayesian model reduction.

Marković, Friston & Kiebel, "Bayesian sparsification for deep neural networks with Bayesian
model reduction", arXiv 2309.12095 (2023). Sub-packages: :mod:`bmr_jax.data` (datasets),
:mod:`bmr_jax.nets` (Flax NNX model zoo), :mod:`bmr_jax.inference.baseline` (plain Optax training),
:mod:`bmr_jax.cli` (the ``bmr-jax`` command).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bmr-jax")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
