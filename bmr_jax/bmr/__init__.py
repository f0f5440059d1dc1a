"""Bayesian model reduction: closed-form kernels, decision rules and the reduce step."""

from bmr_jax.bmr.decide import (
    RULES,
    Evidence,
    PolynomialSchedule,
    Rule,
    SpikeAndSlab,
    TargetSparsity,
    spike_and_slab,
)
from bmr_jax.bmr.delta_f import (
    delta_f,
    delta_f_matrix_normal_rows,
    delta_f_mvn,
    delta_f_spike,
    group_delta_f,
)
from bmr_jax.bmr.reduce import (
    ReduceResult,
    gamma_from_masks,
    make_guide_reduce,
    make_neuron_reduce,
    make_reduce,
    matrix_normal_posterior,
    mean_field_posterior,
    noncentred_reduced_posterior,
    propagate_dead_units,
    read_mean_field_posterior,
    sparsity,
)

__all__ = [
    "RULES",
    "Evidence",
    "PolynomialSchedule",
    "ReduceResult",
    "Rule",
    "SpikeAndSlab",
    "TargetSparsity",
    "delta_f",
    "delta_f_matrix_normal_rows",
    "delta_f_mvn",
    "delta_f_spike",
    "gamma_from_masks",
    "group_delta_f",
    "make_guide_reduce",
    "make_neuron_reduce",
    "make_reduce",
    "matrix_normal_posterior",
    "mean_field_posterior",
    "noncentred_reduced_posterior",
    "propagate_dead_units",
    "read_mean_field_posterior",
    "sparsity",
    "spike_and_slab",
]
