"""``python -m bmr_jax.cli``: the ``bmr-jax`` command."""

import sys

from bmr_jax.cli import main

sys.exit(main())
