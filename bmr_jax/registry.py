"""A small name -> item table shared by every registry of the library (datasets, networks, and
later priors, guides, decision rules), so that all of them fail the same way on a bad name."""

from __future__ import annotations

from typing import Generic, TypeVar

from bmr_jax.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Items by name, in registration order.

    Args:
      kind: what the items are, for error messages (``"dataset"``, ``"network"``, ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, overwrite: bool = False) -> T:
        """Adds ``item`` as ``name``; ``overwrite=True`` replaces an existing entry."""
        if name in self._items and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Removes ``name`` (:class:`UnknownNameError` if it is not registered)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        """The item registered as ``name``; :class:`UnknownNameError` if there is none."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
