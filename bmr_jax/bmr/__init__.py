"""Bayesian model reduction: closed-form kernels, decision rules and the reduce step."""

from bmr_jax.bmr.delta_f import (
    delta_f,
    delta_f_matrix_normal_rows,
    delta_f_mvn,
    group_delta_f,
)

__all__ = ["delta_f", "delta_f_matrix_normal_rows", "delta_f_mvn", "group_delta_f"]
