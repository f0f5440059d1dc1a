"""Where a finished mean-field run's posterior sits against its prior, layer by layer.

    python scripts/posterior_widths.py RUN

In the non-centred coordinates of METHOD.md section 2 every weight is ``W = s gamma Z`` with the
prior ``Z ~ N(0, 1)`` and the guide ``q(Z) = N(m, sd^2)``. Per Bayesian layer this prints the
fraction of entries with ``|m| > 2`` and with ``sd > 0.5`` (still near the prior's width), the
median ``sd``, and the KL of ``q(Z)`` from ``N(0, 1)`` summed over the layer,
``(sd^2 + m^2 - 1 - ln sd^2) / 2`` per entry, with the part ``m^2 / 2`` that the means pay;
then the guide's median of every scale latent (for the flat prior, the layer precisions
``c^-2``). The total KL per training datum is what the ELBO per datum pays for the posterior.
"""

from __future__ import annotations

import sys

import numpy as np

from bmr_jax.errors import BmrJaxError
from bmr_jax.export.from_run import restore_run


def layer_row(name, mean, precision) -> tuple[str, float]:
    """The table row of one layer and its KL."""
    m, sd = np.asarray(mean), 1.0 / np.sqrt(np.asarray(precision))
    kl = 0.5 * (sd**2 + m**2 - 1.0 - np.log(sd**2))
    row = (f"| {name} | {m.size} | {np.mean(np.abs(m) > 2):.3f} | {np.mean(sd > 0.5):.3f} | "
           f"{np.median(sd):.3f} | {kl.sum():.0f} | {np.sum(m**2) / 2:.0f} |")  # fmt: skip
    return row, float(kl.sum())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python scripts/posterior_widths.py RUN", file=sys.stderr)
        return 2
    try:
        run = restore_run(argv[0])
    except BmrJaxError as error:
        print(f"posterior_widths: {error}", file=sys.stderr)
        return 2
    params = run.setup.trainer.params(run.state.train)
    print("| layer | entries | abs(m) > 2 | sd > 0.5 | median sd | KL | of it m^2/2 |")
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for name, (mean, precision) in run.setup.guide.posterior(params).items():
        row, kl = layer_row(name, mean, precision)
        total += kl
        print(row)
    print(f"KL {total:.0f} nats, {total / len(run.dataset.train.labels):.3f} per training datum")
    medians = run.setup.guide.median(params)
    print("scale latents (guide medians):", ", ".join(
        f"{k} {float(np.asarray(v)):.3g}" for k, v in medians.items() if np.size(v) == 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
