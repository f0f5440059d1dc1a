"""Process-wide JAX settings: the persistent compilation cache.

Compiling a network's training step costs seconds on a CPU; the persistent cache keeps the
compiled executables on disk so that a second run (or test session) skips most of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import platformdirs

CACHE_ENV = "BMR_JAX_COMPILATION_CACHE"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache.

    The folder is ``path``, else ``$BMR_JAX_COMPILATION_CACHE``, else
    ``<user cache dir>/bmr-jax/jax``. Setting the variable to an empty string or ``0`` turns
    the cache off. Returns the folder used (``None`` when off).
    """
    if path is None:
        path = os.environ.get(CACHE_ENV, Path(platformdirs.user_cache_dir("bmr-jax")) / "jax")
    if str(path) in {"", "0"}:
        return None
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
