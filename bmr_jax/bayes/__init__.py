"""The Bayesian model (METHOD.md sections 2 and 3): a network's weight layers as matrices
(:mod:`~bmr_jax.bayes.layers`), priors over them (:mod:`~bmr_jax.bayes.priors`), likelihoods
(:mod:`~bmr_jax.bayes.likelihoods`), the NumPyro model (:mod:`~bmr_jax.bayes.model`) and the
approximate posteriors with their read-out for BMR (:mod:`~bmr_jax.bayes.guides`)."""
