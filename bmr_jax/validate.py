"""Checks of settings against their declared types and bounds, shared by the config file, its
``key=value`` overrides and the Python API (the same rule wherever a value comes from).

A settings dataclass declares each field's bounds in its metadata (:func:`setting`) and calls
:func:`check_fields` from ``__post_init__``; a bad value raises :class:`ConfigError` naming
``section.key``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bmr_jax.errors import ConfigError


def setting(default: Any = None, *, minimum: float | None = None, above: float | None = None,
            below: float | None = None, choices: Callable[[], list[str]] | None = None,
            factory: Callable[[], Any] | None = None):  # fmt: skip
    """A dataclass field with bounds: ``minimum`` (>=), ``above`` (>), ``below`` (<), and
    ``choices`` (a function returning the allowed names, read when checked: a registry's)."""
    metadata = {"minimum": minimum, "above": above, "below": below, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_type(key: str, value: Any, annotation: str) -> Any:
    """``value`` if it fits ``annotation`` (a type's source text: ``int``, ``float | None``,
    ``str``, ``bool``, ``dict``); ints are accepted for floats and returned as floats."""
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(f"{key}: must not be null")
    kind = annotation.split("|")[0].strip().split("[")[0]
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind in ("int", "float") and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind == "int" and not isinstance(value, int))
    ):
        expected = "an integer" if kind == "int" else "a number"
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if kind == "dict" and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return float(value) if kind == "float" else value


def check_bounds(key: str, value: Any, metadata) -> None:
    """Raises :class:`ConfigError` if ``value`` breaks a bound of ``metadata``."""
    if value is None:
        return
    if metadata.get("minimum") is not None and value < metadata["minimum"]:
        raise ConfigError(f"{key}: must be >= {metadata['minimum']}, got {value}")
    if metadata.get("above") is not None and not value > metadata["above"]:
        raise ConfigError(f"{key}: must be > {metadata['above']}, got {value}")
    if metadata.get("below") is not None and not value < metadata["below"]:
        raise ConfigError(f"{key}: must be < {metadata['below']}, got {value}")
    choices = metadata.get("choices")
    if choices is not None and value not in choices():
        raise ConfigError(f"{key}: unknown value {value!r}; allowed: {', '.join(choices())}")


def check_fields(obj, section: str) -> None:
    """Checks every field of the dataclass instance ``obj`` (``section.field`` in errors);
    converts ints given for float fields."""
    for f in dataclasses.fields(obj):
        key = f"{section}.{f.name}" if section else f.name
        value = check_type(key, getattr(obj, f.name), str(f.type))
        check_bounds(key, value, f.metadata)
        object.__setattr__(obj, f.name, value)
