"""A small TOML writer for the values that hosts.toml holds: pure, no I/O.

The standard library reads TOML (`tomllib`) but cannot write it. lokal only needs to write back an
operator's own `[host."..."]` tables (strings, booleans, numbers, arrays, sub-tables such as `header`),
so this writer covers exactly those and refuses anything else (dates, for example) with `TomlWriteError`.

Strings are written as TOML basic strings. JSON's escapes (`\\"`, `\\\\`, `\\n`, `\\uXXXX`) are all valid
TOML escapes, so `json.dumps` does the quoting; only DEL, which JSON leaves raw, is escaped on top.
Non-ASCII stays raw (`ensure_ascii=False`): JSON's surrogate-pair escapes are invalid in TOML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class TomlWriteError(ValueError):
    pass


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def key(name: str) -> str:
    return name if _BARE_KEY.match(name) else quote(name)


def value(item: Any) -> str:
    if isinstance(item, bool):  # before int: bool is an int subclass
        return "true" if item else "false"
    if isinstance(item, str):
        return quote(item)
    if isinstance(item, int | float):
        return repr(item)
    if isinstance(item, Mapping):
        return "{ " + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + " }"
    if isinstance(item, Sequence):
        return "[" + ", ".join(value(v) for v in item) + "]"
    raise TomlWriteError(f"cannot write a {type(item).__name__} value in hosts.toml")


def table(path: Sequence[str], items: Mapping[str, Any], indent: str = "") -> list[str]:
    """The lines of `[path]` with its plain keys first, then its sub-tables (a blank line before each).

    An empty path means the top level, which has no header line.
    """
    lines = [f"[{'.'.join(key(part) for part in path)}]"] if path else []
    lines += [f"{indent}{key(k)} = {value(v)}" for k, v in items.items() if not isinstance(v, Mapping)]
    for k, v in items.items():
        if isinstance(v, Mapping):
            lines += ["", *table([*path, k], v, indent)]
    return lines
