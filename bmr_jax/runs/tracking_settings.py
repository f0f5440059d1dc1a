"""``tracking.*``, the config section that says where a run's metrics are copied to
(:mod:`bmr_jax.runs.tracking` copies them). Its own module so that the config schema
(:mod:`bmr_jax.runs.config`) does not import the trackers, which read configs."""

from __future__ import annotations

from dataclasses import dataclass

from bmr_jax.validate import check_fields, setting


@dataclass(frozen=True)
class TrackingSettings:
    """``tracking.*``: where a run's metrics are copied to (the module docstring).

    Attributes:
      tensorboard: write TensorBoard event files to ``RUN/tensorboard``.
      mlflow: an MLflow tracking URI to log to (``None``: no MLflow).
      mlflow_experiment: the MLflow experiment the run is logged under.
    """

    tensorboard: bool = setting(False)
    mlflow: str | None = setting(None)
    mlflow_experiment: str = setting("bmr-jax")

    def __post_init__(self):
        check_fields(self, "tracking")
