"""Carrying out runs: configs (:mod:`~bmr_jax.runs.config`), run folders and their checkpoints
(:mod:`~bmr_jax.runs.folder`, :mod:`~bmr_jax.runs.checkpoints`), one experiment into a folder
(:mod:`~bmr_jax.runs.experiment`), grids (:mod:`~bmr_jax.runs.grid`), tracking
(:mod:`~bmr_jax.runs.tracking`) and the step benchmark (:mod:`~bmr_jax.runs.bench`). Reading
their results is :mod:`bmr_jax.results`."""
