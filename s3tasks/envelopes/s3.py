"""S3's own notification records (and s3:TestEvent), plus the one key-decoding function.

This module holds the only place object keys are URL-decoded; every envelope that encodes
keys (S3 notifications, Batch Operations tasks) decodes them here, exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from s3tasks.envelopes.fields import excerpt, optional_str, parse_size, parse_time, required
from s3tasks.envelopes.limits import checked_event
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage
from s3tasks.events import BACKFILL_RECORD_KEY, EventSource, S3Event
from s3tasks.exceptions import MalformedMessage


def decode_key(encoded: str, where: str) -> str:
    """URL-decode a key once, form-style: `+` is a space, `%2B` a plus, `%2F` a slash."""
    try:
        return unquote_plus(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"{where}: {excerpt(encoded)} does not decode to UTF-8") from exc


def parse_s3_notification(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """`{"Records": [aws:s3 records]}`: one event per record."""
    events = tuple(
        _s3_record_event(record, f"{where}.Records[{i}]")
        for i, record in enumerate(document["Records"])
    )
    return ParsedMessage(MessageKind.S3_NOTIFICATION, events)


def parse_test_event(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """s3:TestEvent, sent when a notification configuration is saved: no events."""
    return ParsedMessage(MessageKind.TEST_EVENT, (), is_test_event=True)


def _s3_record_event(record: Mapping[str, Any], where: str) -> S3Event:
    s3 = required(record, "s3", where, Mapping)
    bucket = required(s3, "bucket", f"{where}.s3", Mapping)
    obj = required(s3, "object", f"{where}.s3", Mapping)
    object_where = f"{where}.s3.object"
    event = S3Event(
        bucket=required(bucket, "name", f"{where}.s3.bucket", str),
        # The S3 notification format URL-encodes keys ("red flower.jpg" -> "red+flower.jpg").
        key=decode_key(required(obj, "key", object_where, str), f"{object_where}.key"),
        event_name=required(record, "eventName", where, str).removeprefix("s3:"),
        event_time=parse_time(record.get("eventTime"), f"{where}.eventTime"),
        size=parse_size(obj.get("size"), f"{object_where}.size"),
        etag=optional_str(obj, "eTag", object_where),
        version_id=optional_str(obj, "versionId", object_where),
        sequencer=optional_str(obj, "sequencer", object_where),  # moto leaves it out
        region=optional_str(record, "awsRegion", where),
        source=_source_of(record, where),
        raw=dict(record),
    )
    return checked_event(event, where)


def _source_of(record: Mapping[str, Any], where: str) -> str:
    """`backfill` for the records `s3tasks_backfill --enqueue` sends (they carry an
    `s3tasks` object naming the backfill and, maybe, its handlers); `s3` for S3's own."""
    marker = record.get(BACKFILL_RECORD_KEY)
    if marker is None:
        return EventSource.S3
    marker_where = f"{where}.{BACKFILL_RECORD_KEY}"
    if not isinstance(marker, Mapping):
        raise MalformedMessage(f"{marker_where}: expected an object, found {excerpt(marker)}")
    handlers = marker.get("handlers", [])
    if not isinstance(handlers, list) or not all(isinstance(h, str) and h for h in handlers):
        raise MalformedMessage(
            f"{marker_where}.handlers: expected a list of handler names, found {excerpt(handlers)}"
        )
    return EventSource.BACKFILL
