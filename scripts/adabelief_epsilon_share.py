"""How much of a run's AdaBelief step its epsilons decide: the test of whether scaling the ELBO
(per datum, ``1 / N``, or the whole sum) can change a run.

AdaBelief (Zhuang et al. 2020) steps by ``m_hat / (sqrt(s_hat) + eps)`` with
``s_t = b2 s_(t-1) + (1 - b2) (g_t - m_t)^2 + eps_root``. Multiplying the loss by ``c``
multiplies ``m`` by ``c`` and the data part of ``s`` by ``c^2``, leaving the step unchanged
except through ``eps`` and the ``eps_root`` that ``s`` accumulates. This reads the optimiser
state of a run's final checkpoint and prints the share of ``s`` that is accumulated
``eps_root``, and the share of ``sqrt(s_hat)`` that ``eps`` is, at the run's scale and at
``N`` times it (the unscaled ELBO).

    python scripts/adabelief_epsilon_share.py RUN [--eps 1e-16] [--eps-root 1e-16] [--b2 0.999]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

from bmr_jax import export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder")
    parser.add_argument("--eps", type=float, default=1e-16)
    parser.add_argument("--eps-root", type=float, default=1e-16)
    parser.add_argument("--b2", type=float, default=0.999)
    args = parser.parse_args()
    restored = export.restore_run(args.run)
    # AdaBelief's mu and nu, wherever the optimiser chain holds them
    state = optax.tree_utils.tree_get(restored.state.train.opt_state, "ScaleByBeliefState")
    steps = int(state.count)
    nu = np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(state.nu)])
    floor = args.eps_root * (1 - args.b2**steps) / (1 - args.b2)  # eps_root summed into nu
    correction = 1 - args.b2**steps
    print(f"{args.run}: {steps} steps, {nu.size} entries; accumulated eps_root {floor:.2e}")
    num_data = restored.dataset.train.images.shape[0]
    for name, c in (("as run (per datum)", 1.0), ("x N (the summed ELBO)", num_data)):
        data_part = (nu - floor) * c**2  # the part of nu that scales with the loss
        share_root = floor / (data_part + floor)
        share_eps = args.eps / np.sqrt((data_part + floor) / correction)
        root = f"median {np.median(share_root):.1e}, max {share_root.max():.1e}"
        print(f"  {name}: eps_root share of nu: {root}; eps share of sqrt(nu_hat): max "
              f"{share_eps.max():.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
