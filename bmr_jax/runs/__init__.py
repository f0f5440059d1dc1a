"""Runs: configs (:mod:`~bmr_jax.runs.config`), run folders and their checkpoints
(:mod:`~bmr_jax.runs.folder`, :mod:`~bmr_jax.runs.checkpoints`), one experiment into a folder
(:mod:`~bmr_jax.runs.experiment`), grids (:mod:`~bmr_jax.runs.grid`), tables
(:mod:`~bmr_jax.runs.report`), the paper's figures (:mod:`~bmr_jax.runs.plots`) and the step
benchmark (:mod:`~bmr_jax.runs.bench`)."""
