"""What S3 allows and what s3tasks' columns hold, checked once per event before it leaves the
envelope layer, so nothing the database would refuse ever reaches dispatch.

Every parser passes the `S3Event` it built through `checked_event`. A value outside these
limits cannot come from S3, so the whole message is malformed (`MalformedMessage`), never a
`DataError` at insert time that would retry a hopeless message and fail its neighbours.
The column sizes mirror `s3tasks.models.history.EventRecord` (a test keeps them in step).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from s3tasks.envelopes.fields import excerpt, type_name
from s3tasks.events import S3Event
from s3tasks.exceptions import MalformedMessage

# S3: names are 3-63 characters; lowercase letters, digits, "." and "-" (buckets made in
# us-east-1 before 2018 may also hold uppercase letters and "_").
BUCKET_NAME = re.compile(r"[A-Za-z0-9._-]{3,63}")
KEY_MAX_BYTES = 1024  # S3: a key is at most 1,024 bytes of UTF-8
# S3's largest object: 50 TB since December 2025 (it was 5 TB); 10,000 parts of 5 GiB fit.
MAX_OBJECT_SIZE = 50 * 2**40
EVENT_NAME = re.compile(r"[\x21-\x7e]{1,100}")  # EventRecord.event_name; S3 names are ASCII
TEXT_COLUMNS = {  # field -> EventRecord max_length
    "etag": 100,
    "version_id": 1024,
    "sequencer": 100,
    "region": 32,
}
MAX_DEPTH = 32  # nesting of a stored raw record; real ones have 4 or 5 levels

# A NUL in JSON text is the escape \u0000; after an even run of backslashes (escaped
# backslashes, literal text) it is the six characters "\u0000" instead, which is fine.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def checked_event(event: S3Event, where: str) -> S3Event:
    """`event`, after checking every field fits S3's limits and the database columns."""
    if not isinstance(event.bucket, str) or not BUCKET_NAME.fullmatch(event.bucket):
        raise MalformedMessage(
            f"{where}: bucket name {excerpt(event.bucket)} is not an S3 bucket name "
            "(3-63 letters, digits, '.', '-' or '_')"
        )
    _check_key(event.key, where)
    if not EVENT_NAME.fullmatch(event.event_name):
        raise MalformedMessage(
            f"{where}: event name {excerpt(event.event_name)} is not an S3 event name "
            "(1-100 visible ASCII characters, such as 'ObjectCreated:Put')"
        )
    for name, limit in TEXT_COLUMNS.items():
        _check_text(getattr(event, name), f"{where}: {name}", limit)
    if event.size is not None and not 0 <= event.size <= MAX_OBJECT_SIZE:
        raise MalformedMessage(
            f"{where}: object size {event.size:,} bytes is beyond S3's 50 TB object limit"
        )
    check_json(event.raw, where)
    if event.batch is not None:
        batch = event.batch
        for name in ("schema_version", "invocation_id", "task_id", "job_id"):
            _check_text(getattr(batch, name), f"{where}: {name}", None)
        check_json(batch.user_arguments, f"{where}: userArguments")
    return event


def storable(text: str) -> bool:
    """Whether the database can hold `text` as it is: PostgreSQL text holds no NUL
    character, and UTF-8 cannot encode a lone surrogate."""
    return "\x00" not in text and _encodable(text)


def _encodable(text: str) -> bool:
    if text.isascii():  # the common case, answered in C without a copy
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json(value: Any, where: str) -> None:
    """Refuse a document the database's JSON column would reject or that nests too deeply.

    Python's C encoder does the walking (a Python walk cost ~50 µs per S3 record): it
    refuses NaN, Infinity, values that are no JSON and integers too long to print; its
    output then shows every NUL (escaped) and lone surrogate (kept, with ensure_ascii off).
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise MalformedMessage(f"{where}: not storable as JSON ({excerpt(reason)})") from None
    bad = _bad_character(text)
    if bad is not None:
        around = text[max(bad - 60, 0) : bad + 60]
        raise MalformedMessage(f"{where}: holds a NUL or lone surrogate: …{around!r}…")
    if text.count("[") + text.count("{") > MAX_DEPTH:  # only then can it nest too deeply
        _check_depth(value, where)


def _bad_character(text: str) -> int | None:
    """Where JSON text holds a lone surrogate or an escaped NUL, or None (the fast paths are
    C string methods: a regex over every record cost more than parsing it)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return exc.start
    if "\\u0000" in text:
        nul = _ESCAPED_NUL.search(text)
        if nul:
            return nul.start()
    return None


def _check_depth(value: Any, where: str) -> None:
    """Walk the containers only, with an explicit stack (no `RecursionError` here)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise MalformedMessage(f"{where}: nested deeper than {MAX_DEPTH} levels")
        children = item.values() if isinstance(item, Mapping) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, Mapping | list | tuple))


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or not key:
        raise MalformedMessage(f"{where}: the object key is empty")
    if not storable(key):
        raise MalformedMessage(
            f"{where}: object key {excerpt(key)} holds a NUL or a lone surrogate; "
            "S3 keys are UTF-8 text"
        )
    size = len(key.encode("utf-8"))
    if size > KEY_MAX_BYTES:
        raise MalformedMessage(
            f"{where}: object key {excerpt(key)} is {size:,} bytes of UTF-8; "
            f"S3 keys are at most {KEY_MAX_BYTES:,}"
        )


def _check_text(value: Any, what: str, limit: int | None) -> None:
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} is {type_name(value)}, not a string")
    if limit is not None and len(value) > limit:
        raise MalformedMessage(f"{what} {excerpt(value)} is longer than {limit} characters")
    if not storable(value):
        raise MalformedMessage(f"{what} {excerpt(value)} holds a NUL or a lone surrogate")
