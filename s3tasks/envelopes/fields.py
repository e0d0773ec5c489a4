"""Field readers shared by every envelope parser: JSON loading and typed, located lookups.

Each reader takes `where`, a JSON-path-like location, so a `MalformedMessage` says exactly
which field of which record was wrong.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from s3tasks.exceptions import MalformedMessage

Payload = Mapping[str, Any] | str | bytes | bytearray

QUOTE_LIMIT = 200  # characters of an offending value an error message may quote
SIZE_DIGITS = 20  # a size written with more digits is no size S3 could send


def load(payload: Payload) -> Mapping[str, Any]:
    """A payload as a JSON object: dicts pass through, text/bytes are parsed."""
    if isinstance(payload, Mapping):
        return payload
    if isinstance(payload, str | bytes | bytearray):
        return load_json(payload, "$")
    raise MalformedMessage(f"$: expected a dict or JSON text/bytes, found {type_name(payload)}")


def load_json(text: str | bytes | bytearray, where: str) -> Mapping[str, Any]:
    """Parse JSON text that must hold an object (envelopes nest JSON inside strings)."""
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError, nesting too deep
        preview = text[:80].decode("utf-8", "replace") if not isinstance(text, str) else text[:80]
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:QUOTE_LIMIT]
        raise MalformedMessage(f"{where}: not JSON ({reason}); it starts {preview!r}") from None
    if not isinstance(document, dict):
        raise MalformedMessage(f"{where}: expected a JSON object, found {type_name(document)}")
    return document


def required(container: Mapping[str, Any], name: str, where: str, kind: type) -> Any:
    """A present, non-empty field of the given type."""
    value = container.get(name)
    if value is None or (not value and isinstance(value, str | list | Mapping)):
        raise MalformedMessage(f"{where}: missing (or empty) required field {name!r}")
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = _TYPE_NAMES.get(kind, "an object")
        raise MalformedMessage(f"{where}.{name}: expected {expected}, found {type_name(value)}")
    return value


def optional_str(container: Mapping[str, Any], name: str, where: str) -> str:
    """A string field that may be absent ("" then)."""
    value = container.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedMessage(f"{where}.{name}: expected a string, found {type_name(value)}")
    return value


def one_of(value: Any, choices: Collection[str], where: str) -> str:
    """`value`, if it is one of the known strings `choices`."""
    if isinstance(value, str) and value in choices:
        return value
    expected = ", ".join(map(repr, choices))
    raise MalformedMessage(f"{where} is {excerpt(value)}; expected one of {expected}")


def parse_size(value: Any, where: str) -> int | None:
    """An object size in bytes; AWS sends an int, some emulators a digit string.

    Only ASCII digits count: `"²".isdigit()` is true, but `int("²")` fails.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) <= SIZE_DIGITS:
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MalformedMessage(f"{where}: expected a size in bytes, found {excerpt(value)}")


def parse_time(value: Any, where: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text (AWS) or epoch seconds (moto's EventBridge)."""
    if value is None or value == "":
        raise MalformedMessage(f"{where}: missing required event time")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedMessage(f"{where}: expected an ISO-8601 time, found {type_name(value)}")
    try:
        if not isinstance(value, str):
            return datetime.fromtimestamp(value, tz=UTC)
        parsed = datetime.fromisoformat(value)
        # AWS times are UTC; one without an offset is read as UTC, never as local time.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):  # also year 1 shifted before year 1 by its offset
        raise MalformedMessage(f"{where}: {excerpt(value)} is not an ISO-8601 time") from None


def type_name(value: Any) -> str:
    """How an error message names a JSON value's type."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def excerpt(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` cut to about `limit` characters, so a 300 KB field never fills a log line."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer too long for Python to print
        return f"<{type_name(value)} too long to show>"
    return text if len(text) <= limit else text[:limit] + "…"


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; PostgreSQL's jsonb refuses them, so refuse them here.
    raise ValueError(f"{name} is not a JSON value")


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string"}
_REPR = reprlib.Repr()  # bounded: a huge or deeply nested value is abbreviated, not walked
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3
