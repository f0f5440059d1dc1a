"""IVON as the trainer of a Bayesian network: the posterior that BMR reduces, learned by a
variational online Newton method instead of the reparameterised ELBO.

Shen et al. 2024 ("Variational Learning is Effective for Large Deep Networks", Algorithm 1;
:mod:`bmr_jax.inference.ivon`) fit ``q = N(m, diag(sigma^2))`` with the gradient taken at a draw
``theta = m + sigma u`` and ``sigma^2 = 1 / (lambda (h + delta))``, ``h`` a running estimate of
the loss's Hessian and ``lambda delta`` the precision of a Gaussian prior (its weight decay).
Here the parameters are the ``Z`` matrices of the layers (METHOD.md 2.1, the flat prior with
its scales fixed: ``Z ~ N(0, 1)``), the loss is the negative log-likelihood per datum at
``theta``, ``lambda = N`` and ``delta = 1 / N``, so that ``lambda delta = 1`` is the prior
precision of every ``Z``::

    loss(theta) = -(1 / B) sum_batch log p(y | x, theta)
    posterior precision of Z = N h + 1          (the variational online Newton precision)

A pruned entry (multiplier 1e-12) has no likelihood: its ``h`` decays and its posterior goes
to the prior ``N(0, 1)``, as under mean-field SVI.

Two safeguards beyond Algorithm 1, both options of :func:`bmr_jax.inference.ivon.ivon`: ``h``
is kept ``>= 0`` (no posterior wider than the prior) and every entry of the Newton step is
clipped to ``CLIP_RADIUS`` before the learning rate. Without the clip the runs diverged, with
a few weights' means reaching 10^2-10^3 where ``h`` was small. Measured with ``bmr-jax run
configs/mnist_frontier/lenet_300_100-ivon_bmr-100x.yaml seed=137 train.blocks=30 eval.every=10
eval.samples=20 bmr.refit_blocks=0`` (MNIST LeNet-300-100, 600 steps per block), the loss per
datum at block 10 was:
- 3,092 (ACC 0.774) with the prior in the loss and ``delta`` a mere floor;
- 10,794 with ``delta = 1/N`` and neither safeguard;
- 3,420 (ACC 0.789) with ``h >= 0`` alone, after 0.10 at block 5.
With neither safeguard at learning rate 0.02 it was 946 at block 20. With both, the same run
had ACC 0.967 and ECE 0.006 at block 20, and 0.971 and 0.006 at block 30, and its loss kept
falling.

The trainer presents the posterior as a mean-field guide's parameters (``{site}/loc`` = ``m``,
``{site}/scale`` = ``sigma``), so BMR's
reduce steps (METHOD.md 4.5) and the posterior predictive read it exactly as they read SVI's.
The Hessian starts at ``hess_init = (1 / s0^2 - 1) / N``, which makes the posterior's starting
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

CLIP_RADIUS = 0.1  # |step| <= lr * 0.1 = 0.01 per entry: AdaBelief's bound at BMR-S&S's 1e-2
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

    prior_in_loss = False  # the prior is IVON's weight decay

    def __init__(self, bnet: BayesianNetwork, guide: MeanFieldGuide, train: Split, *,
                 lr: float = 0.1, batch_size: int = 120, seed: int = 0, mesh=None,
                 minibatches: str = "epochs"):  # fmt: skip
        if not isinstance(guide, MeanFieldGuide):
            raise ValueError(f"IVON's posterior is diagonal: it needs the mean-field guide, "
                             f"not {guide.name!r}")  # fmt: skip
        hyper = [name for name in guide.sites if not name.endswith("/z")]
        if hyper:
            raise ValueError(f"IVON's prior is its weight decay, N(0, 1) on every Z: the prior "
                             f"must have fixed scales, not latent {', '.join(hyper)}")  # fmt: skip
        num_data = len(train)
        delta = 1.0 / num_data  # lambda delta = 1: the N(0, 1) prior of Z
        hess_init = 1.0 / (num_data * guide.init_scale**2) - delta
        if hess_init <= 0:
            raise ValueError(f"guide.init_scale {guide.init_scale} is wider than the prior's 1")
        optimizer = optax.inject_hyperparams(
            ivon.ivon, static_args=("ess", "weight_decay", "b1", "b2", "hess_init", "seed",
                                    "hess_min", "clip_radius")  # fmt: skip
        )(learning_rate=lr, ess=float(num_data), weight_decay=delta,
          b2=HESSIAN_MOMENTUM, hess_init=hess_init, seed=seed, hess_min=0.0,
          clip_radius=CLIP_RADIUS)  # fmt: skip
        super().__init__(bnet, DeltaGuide(guide.sites, guide.init_values), train,
                         optimizer=optimizer, batch_size=batch_size, seed=seed,
                         elbo=Trace_ELBO(), mesh=mesh, minibatches=minibatches)  # fmt: skip
        self.guide = guide  # the posterior's form; the loss runs on the point guide

    def gradient_point(self, params, opt_state):
        """``theta = m + sigma u``: IVON takes the gradient at a posterior draw."""
        return ivon.sample_parameters(params, opt_state)

    def params(self, state: TrainState) -> dict[str, jax.Array]:
        """The posterior as the mean-field guide's parameters: ``loc`` = ``m``, ``scale`` =
        ``sigma = (lambda (h + delta))^-1/2`` (jit-able)."""
        sigma = ivon.posterior_scale(state.opt_state)
        values = {}
        for name in self.guide.sites:
            values[f"{name}/loc"] = state.params[f"{name}/loc"]
            values[f"{name}/scale"] = sigma[f"{name}/loc"]
        return values

    def set_params(self, state, values):
        raise ValueError("IVON's posterior lives in its Hessian estimate: a reduced posterior "
                         "cannot be written back (a method with write_back is not for IVON)")
