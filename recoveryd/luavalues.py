"""Values as Redis's Lua scripts read them from MessagePack.

Redis's MessagePack library knows no binary type and turns every number
into a Lua number (a double), so what goes to a script is prepared here:
bytes as a string of the same bytes, huge integers and floats as text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

__all__ = ["LuaArg", "Value", "exact", "lua_record", "lua_value", "lua_values"]

Value = str | bytes | int | float
LuaArg = str | int | msgspec.Raw | list[Any] | dict[str, Any]
# Redis writes a Lua number as an integer exactly only below this.
_EXACT_INT = 1 << 53


def lua_value(value: Value) -> LuaArg:
    """A value in a form the script reads back exactly.

    Redis's MessagePack library knows no binary type, so bytes go in as a
    string of the same bytes. Small integers go as they are; a float or a
    huge integer goes as text, since Redis would write the Lua number with
    17 digits ("0.94999999999999996").
    """
    if isinstance(value, bytes):
        return msgspec.Raw(_str_header(len(value)) + value)
    if type(value) is int:
        return exact(value)
    return str(value)


def lua_record(task: list[Any]) -> list[Any]:
    """A record with its bytes as strings, as the scripts read them."""
    more = task[-1] if isinstance(task[-1], dict) else None
    out = lua_values(task[:-1] if more is not None else task)
    if more is not None:
        out.append({name: lua_value(value) for name, value in more.items()})
    return out


def exact(n: int) -> int | str:
    """An integer as the script reads it back exactly: as is, or huge as text."""
    return n if -_EXACT_INT < n < _EXACT_INT else str(n)


def lua_values(values: Iterable[Value]) -> list[LuaArg]:
    # Most values are text or small integers already: checked inline, far
    # more cheaply than by a call per value.
    return [
        v
        if type(v) is str or (type(v) is int and -_EXACT_INT < v < _EXACT_INT)
        else lua_value(v)
        for v in values
    ]


def _str_header(size: int) -> bytes:
    """MessagePack's header for a string of ``size`` bytes."""
    if size < 32:
        return bytes((0xA0 | size,))
    if size < 1 << 8:
        return b"\xd9" + size.to_bytes(1, "big")
    if size < 1 << 16:
        return b"\xda" + size.to_bytes(2, "big")
    return b"\xdb" + size.to_bytes(4, "big")
