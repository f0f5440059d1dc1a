"""Inference: SVI in blocks with an explicit training state (:mod:`~bmr_jax.inference.train`,
minibatches in :mod:`~bmr_jax.inference.batches`, data parallelism in
:mod:`~bmr_jax.inference.parallel`), the posterior predictive and its metrics
(:mod:`~bmr_jax.inference.evaluate`, :mod:`~bmr_jax.inference.metrics`), IVON as an optax
optimiser (:mod:`~bmr_jax.inference.ivon`) and plain Adam training of a Flax network
(:mod:`~bmr_jax.inference.baseline`)."""
