"""``python -m bmr_jax`` is the ``bmr-jax`` command."""

import sys

from bmr_jax.cli import main

sys.exit(main())
