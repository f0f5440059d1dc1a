"""IVON as the trainer of a Bayesian network: the posterior that BMR reduces, learned by a
variational online Newton method instead of the reparameterised ELBO.

Shen et al. 2024 ("Variational Learning is Effective for Large Deep Networks", Algorithm 1;
:mod:`bmr_jax.inference.ivon`) fit ``q = N(m, diag(sigma^2))`` with the gradient taken at a draw
``theta = m + sigma u`` and ``sigma^2 = 1 / (lambda (h + delta))``. Here the parameters are the
network's unconstrained latents (``Z`` of every layer and the prior's log precisions,
METHOD.md 2.1) and the loss is the negative log joint per datum at ``theta``::

    loss(theta) = -(N / B) sum_batch log p(y | x, theta) / N - log p(theta) / N

so the prior's curvature (1/N per entry of ``Z ~ N(0, 1)``) is part of the Hessian ``h`` that
IVON estimates, ``lambda = N`` and ``delta`` is only a floor (1e-8): the posterior precision
``N (h + delta)`` tends to the Laplace / variational online Newton precision
``H_likelihood + 1`` of each ``Z``. A pruned entry (multiplier 1e-12) sees only its prior and
relaxes to ``N(0, 1)``, as under mean-field SVI.

The trainer presents the posterior as a mean-field guide's parameters (``{site}/loc`` = ``m``,
``{site}/scale`` = ``sigma``; positive latents are log-normal, their ``m`` the log), so BMR's
reduce steps (METHOD.md 4.5) and the posterior predictive read it exactly as they read SVI's.
The Hessian starts at ``hess_init = 1 / (N s0^2)``, which makes the posterior's starting
standard deviation ``s0`` the guide's (``guide.init_scale``, 1e-2).
"""

from __future__ import annotations

import jax
import optax
from numpyro.infer import Trace_ELBO

from bmr_jax.bayes.guides import DeltaGuide, MeanFieldGuide
from bmr_jax.bayes.model import BayesianNetwork
from bmr_jax.data import Split
from bmr_jax.inference import ivon
from bmr_jax.inference.train import SVITrainer, TrainState

HESSIAN_FLOOR = 1e-8  # IVON's delta: the prior is in the loss, this only keeps h + delta > 0
HESSIAN_MOMENTUM = 0.999  # b2: the Hessian estimate averages over ~10^3 steps (2 epochs of MNIST)


class IVONTrainer(SVITrainer):
    """:class:`~bmr_jax.inference.train.SVITrainer`'s interface (``init``, ``run_block``,
    ``params``, ``learning_rate``...) over IVON.

    Args:
      bnet: the Bayesian network.
      guide: a :class:`~bmr_jax.bayes.guides.MeanFieldGuide`: its sites and initial values are
        where ``m`` starts, its ``init_scale`` where ``sigma`` starts, and it is the form in
        which :meth:`params` presents the posterior.
      train: the training split; ``lambda`` is its size.
      lr: IVON's learning rate (kept in the optimiser state, so a rollback can lower it).
      batch_size, seed, minibatches, mesh: as :class:`SVITrainer`'s.
    """

    def __init__(self, bnet: BayesianNetwork, guide: MeanFieldGuide, train: Split, *,
                 lr: float = 0.1, batch_size: int = 120, seed: int = 0, mesh=None,
                 minibatches: str = "epochs"):  # fmt: skip
        if not isinstance(guide, MeanFieldGuide):
            raise ValueError(f"IVON's posterior is diagonal: it needs the mean-field guide, "
                             f"not {guide.name!r}")  # fmt: skip
        num_data = len(train)
        hess_init = 1.0 / (num_data * guide.init_scale**2) - HESSIAN_FLOOR
        if hess_init <= 0:
            raise ValueError(f"guide.init_scale {guide.init_scale} is wider than IVON's floor")
        optimizer = optax.inject_hyperparams(
            ivon.ivon, static_args=("ess", "weight_decay", "b1", "b2", "hess_init", "seed")
        )(learning_rate=lr, ess=float(num_data), weight_decay=HESSIAN_FLOOR,
          b2=HESSIAN_MOMENTUM, hess_init=hess_init, seed=seed)  # fmt: skip
        point = DeltaGuide(guide.sites, guide.init_values)
        super().__init__(bnet, point, train, optimizer=optimizer, batch_size=batch_size,
                         seed=seed, elbo=Trace_ELBO(), mesh=mesh,
                         minibatches=minibatches)  # fmt: skip
        self.point_guide, self.guide = point, guide

    def gradient_point(self, params, opt_state):
        """``theta = m + sigma u``: IVON takes the gradient at a posterior draw."""
        return ivon.sample_parameters(params, opt_state)

    def params(self, state: TrainState) -> dict[str, jax.Array]:
        """The posterior as the mean-field guide's (constrained) parameters: ``loc`` = ``m``
        (for positive latents the log, as the guide's log-normal has it), ``scale`` =
        ``sigma = (lambda (h + delta))^-1/2`` (jit-able)."""
        sigma = ivon.posterior_scale(state.opt_state)
        values = {}
        for name in self.guide.sites:
            values[f"{name}/loc"] = state.params[f"{name}/loc"]  # unconstrained: m itself
            values[f"{name}/scale"] = sigma[f"{name}/loc"]
        return values

    def set_params(self, state, values):
        raise ValueError("IVON's posterior lives in its Hessian estimate: a reduced posterior "
                         "cannot be written back (a method with write_back is not for IVON)")
