"""JSON for the hooks' hot path, through CPython's own C scanner and string encoder (`_json`,
which the json module uses too) without the json module, whose import brings in `re`: 8 ms of
the 30 an agent CLI's hook may take, measured (bench/agent_hook.py). Elsewhere, use json."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


class _Context:
    """What the C scanner reads from a json.JSONDecoder: plain JSON, strictly."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name)  # NaN, Infinity, -Infinity, as json.loads reads them


def loads(text: str | bytes) -> Any:
    """As json.loads; ValueError for anything that is not one JSON value."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        from _json import make_scanner  # (CPython's; the json module falls back the same way)
    except ImportError:
        import json  # (another Python: the module, re and all)

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = make_scanner(_Context)(text, start)  # type: ignore[arg-type]  # (it reads the attributes)
    except StopIteration:
        raise ValueError(f"no JSON value at character {start}") from None
    except SystemError:  # (the scanner's own error for JSON cut short needs json.decoder, not imported here)
        raise ValueError("the JSON ends before its value does") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data at character {end}")
    return value


def dumps_flat(fields: dict[str, str | int | float | bool | None]) -> str:
    """One JSON object of scalars, ASCII only: `{"key": value, ...}` as json.dumps writes it."""
    try:
        from _json import encode_basestring_ascii as quote  # (as in loads)
    except ImportError:
        import json  # (as in loads)

        return json.dumps(fields, ensure_ascii=True)
    parts = []
    for key, value in fields.items():
        if value is None:
            text = "null"
        elif value is True or value is False:
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = quote(str(value))
        parts.append(f"{quote(key)}: {text}")
    return "{" + ", ".join(parts) + "}"
