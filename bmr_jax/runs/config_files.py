"""Config files: YAML mappings whose ``defaults: [other.yaml, ...]`` (paths relative to the file)
are read first and overridden key by key, and ``section.key=value`` overrides from the command
line (the value parsed as YAML). Every problem raises a one-line :class:`ConfigError`.

Numbers are read the way people write them: ``1e-3`` and ``1E10`` are floats, as in YAML 1.2
and JSON, where PyYAML's YAML 1.1 float pattern needs a dot (``1.0e-3``) and would read them as
strings (:func:`load_yaml`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import yaml

from bmr_jax.errors import ConfigError


class NumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: an exponent without a dot is a float."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str | bytes):
    """``yaml.safe_load`` with :class:`NumberLoader`'s floats."""
    return yaml.load(text, Loader=NumberLoader)  # noqa: S506 (a SafeLoader subclass)


def merge(base: dict, update: dict) -> dict:
    """``base`` with ``update``'s keys, nested mappings merged key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path, seen: tuple = ()) -> dict:
    """The mapping in ``path`` on top of its ``defaults`` (``seen``: the includes above it)."""
    try:
        path = path.resolve()
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read config ({type(e).__name__})") from None
    if path in seen:
        raise ConfigError(f"{path}: defaults include themselves in a cycle")
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError) as e:  # a NUL in the name, or not text
        raise ConfigError(f"{path}: cannot read config ({type(e).__name__})") from None
    try:
        content = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if content is None:  # not a silent 50 x 500 default run
        raise ConfigError(f"{path}: the config is empty (name at least a method, data or net, "
                          "or include defaults; see configs/)")  # fmt: skip
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys")
    includes = content.pop("defaults", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: defaults: expected a list of config file paths")
    merged: dict = {}
    for include in includes:
        merged = merge(merged, read_yaml(path.parent / include, (*seen, path)))
    return merge(merged, content)


def parse_override(text: str) -> dict:
    """``"train.blocks=5"`` -> ``{"train": {"blocks": 5}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    out: dict = value
    for part in reversed(key.strip().split(".")):
        if not part:
            raise ConfigError(f"override {text!r}: empty key")
        out = {part: out}
    return out


def import_plugins(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"plugins: expected a list of module names, got {value!r}")
    for module in value:
        try:
            _import_from_here(module)
        except Exception as e:  # the plugin's own error, reported on one line
            raise ConfigError(f"plugins: cannot import {module!r} ({type(e).__name__}: {e})") from e
    return tuple(value)


def _import_from_here(module: str) -> None:
    """Imports ``module`` from Python's import path with the current directory on it, as
    ``python -m bmr_jax`` has it and the ``bmr-jax`` script (whose path starts at its own
    folder) does not: a plugin saved where the command runs is found either way."""
    here = os.getcwd()
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.append(here)
    try:
        importlib.import_module(module)
    finally:
        if added:
            sys.path.remove(here)
