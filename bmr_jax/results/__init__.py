"""Reading results: tables (:mod:`~bmr_jax.results.report`), the paper's figures
(:mod:`~bmr_jax.results.plots`), the accuracy-compression frontier
(:mod:`~bmr_jax.results.frontier`) and the measured speed-ups (:mod:`~bmr_jax.results.speedup`),
all from run folders (:mod:`bmr_jax.runs` carries the runs out)."""
