"""The shared name -> item registry."""

import pytest

from bmr_jax.errors import BmrJaxError, UnknownNameError
from bmr_jax.registry import Registry


def test_register_get_unregister():
    table = Registry("widget")
    table.register("b", 2)
    table.register("a", 1)
    assert table.names() == ["b", "a"] and table.get("a") == 1 and "a" in table
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        table.register("a", 3)
    table.register("a", 3, overwrite=True)
    assert table.get("a") == 3
    table.unregister("a")
    assert "a" not in table


def test_unknown_name_is_one_line_and_lists_the_known_names():
    table = Registry("widget")
    table.register("gear", 1)
    table.register("bolt", 2)
    with pytest.raises(UnknownNameError) as info:
        table.get("nut")
    assert str(info.value) == "unknown widget 'nut'; known: bolt, gear"
    assert isinstance(info.value, BmrJaxError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownNameError):
        table.unregister("nut")
