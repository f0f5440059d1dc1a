"""Bayesian model reduction: closed-form kernels, decision rules and the reduce step."""

from bmr_jax.bmr.decide import (
    RULES,
    Evidence,
    PolynomialSchedule,
    Rule,
    SpikeAndSlab,
    TargetSparsity,
    UnitSpikeAndSlab,
    spike_and_slab,
)
from bmr_jax.bmr.delta_f import (
    delta_f,
    delta_f_matrix_normal_columns,
    delta_f_matrix_normal_rows,
    delta_f_mvn,
    delta_f_spike,
    group_delta_f,
)
from bmr_jax.bmr.reduce import (
    ReduceResult,
    gamma_from_masks,
    make_reduce,
    make_unit_reduce,
    noncentred_reduced_posterior,
    propagate_dead_units,
    sparsity,
)
from bmr_jax.bmr.reduced import (
    GaussianReduced,
    LaplaceReduced,
    ReducedPrior,
    RowSpikeAndSlab,
    StudentTReduced,
    delta_f_quadrature,
)

__all__ = [
    "GaussianReduced",
    "LaplaceReduced",
    "ReducedPrior",
    "RowSpikeAndSlab",
    "StudentTReduced",
    "delta_f_quadrature",
    "RULES",
    "Evidence",
    "PolynomialSchedule",
    "ReduceResult",
    "Rule",
    "SpikeAndSlab",
    "TargetSparsity",
    "UnitSpikeAndSlab",
    "delta_f",
    "delta_f_matrix_normal_columns",
    "delta_f_matrix_normal_rows",
    "delta_f_mvn",
    "delta_f_spike",
    "gamma_from_masks",
    "group_delta_f",
    "make_reduce",
    "make_unit_reduce",
    "noncentred_reduced_posterior",
    "propagate_dead_units",
    "sparsity",
    "spike_and_slab",
]
