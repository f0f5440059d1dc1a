"""The exceptions bmr-jax raises for bad input.

Every error a user can cause (a missing or corrupt data file, an unknown name, a shape that
does not fit) is a subclass of :class:`BmrJaxError` whose message is one line naming the
problem. The command line turns any of them into exit status 2 with that line on stderr.
"""

from __future__ import annotations


class BmrJaxError(Exception):
    """Base class of every error caused by the user's input. Its message is kept on one line:
    line breaks that come from the input (a key or value holding one) are shown escaped."""

    def __str__(self) -> str:
        text = self.args[0] if len(self.args) == 1 else super().__str__()
        return str(text).replace("\r", "\\r").replace("\n", "\\n")


class UnknownNameError(BmrJaxError, KeyError):
    """A registry (datasets, networks, presets, ...) was asked for a name it does not hold."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, tuple(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(self.known))}")

    __str__ = BmrJaxError.__str__  # not KeyError's, which prints the message's repr


class ConfigError(BmrJaxError, ValueError):
    """A setting is invalid: a config file, an override or an argument of the Python API
    (the message names the key)."""


class DataError(BmrJaxError):
    """Base class of every problem with a dataset file."""


class MissingDataFileError(DataError, FileNotFoundError):
    """A dataset file is not in the data folder and could not (or may not) be downloaded."""


class ChecksumMismatchError(DataError):
    """A dataset file's checksum differs from the published one: it is never used."""


class CorruptDataFileError(DataError):
    """A dataset file could not be parsed (truncated, wrong format, inconsistent sizes)."""


class DownloadError(DataError):
    """Every source of a dataset file failed to deliver it."""


class ShapeMismatchError(BmrJaxError, ValueError):
    """A network and the data it is given do not fit together."""


class OutputError(BmrJaxError, OSError):
    """A file bmr-jax was asked to write cannot be written: its folder cannot be created (a
    file is in the way, no permission) or the file cannot be (a read-only or full disk, a
    folder of that name). The message names the file and the operating system's reason."""
