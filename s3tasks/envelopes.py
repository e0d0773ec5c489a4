"""Envelope parsing: every payload shape that carries S3 changes becomes a list of `S3Event`.

This is the one place object keys are URL-decoded, exactly once per envelope that encodes
them. Parsing is all or nothing: a malformed record anywhere makes the whole call raise
`MalformedMessage`, whose text says what was expected and what was found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from s3tasks.events import BATCH_OPERATIONS_EVENT_NAME, BatchTask, EventSource, S3Event
from s3tasks.exceptions import MalformedMessage

__all__ = [
    "ACCEPTED_SHAPES",
    "EVENTBRIDGE_DETAIL_TYPES",
    "MessageKind",
    "ParsedMessage",
    "SqsRecord",
    "message_kind",
    "parse_events",
    "parse_message",
    "sqs_records",
]

Payload = Mapping[str, Any] | str | bytes | bytearray


class MessageKind:
    """Which payload shape a message had (the `kind` of a `ParsedMessage`)."""

    S3_NOTIFICATION = "s3_notification"  # {"Records": [aws:s3]}: SQS direct, SNS raw, Lambda S3
    SNS_NOTIFICATION = "sns_notification"  # SNS JSON envelope, as SQS receives it without raw
    LAMBDA_SNS = "lambda_sns"  # {"Records": [aws:sns]}: Lambda's SNS trigger
    LAMBDA_SQS = "lambda_sqs"  # {"Records": [aws:sqs]}: Lambda's SQS trigger
    EVENTBRIDGE = "eventbridge"
    TEST_EVENT = "test_event"  # s3:TestEvent, sent when a notification configuration is saved
    BATCH_OPERATIONS = "batch_operations"


_SHAPES = {  # kind -> (name, what it looks like), for error messages
    MessageKind.S3_NOTIFICATION: ("an S3 notification", '{"Records": [{"eventSource": "aws:s3"}]}'),
    MessageKind.SNS_NOTIFICATION: ("an SNS notification", '{"Type": "Notification", "Message"}'),
    MessageKind.LAMBDA_SNS: ("a Lambda SNS event", '{"Records": [{"EventSource": "aws:sns"}]}'),
    MessageKind.LAMBDA_SQS: ("a Lambda SQS event", '{"Records": [{"eventSource": "aws:sqs"}]}'),
    MessageKind.EVENTBRIDGE: ("an EventBridge event", '{"source": "aws.s3", "detail-type"}'),
    MessageKind.TEST_EVENT: ("an s3:TestEvent", '{"Event": "s3:TestEvent"} without Records'),
    MessageKind.BATCH_OPERATIONS: (
        "an S3 Batch Operations invocation",
        '{"invocationSchemaVersion": "1.0" or "2.0", "tasks"}',
    ),
}
ACCEPTED_SHAPES = tuple(f"{name} {looks}" for name, looks in _SHAPES.values())
_RECORD_KINDS = {
    "aws:s3": MessageKind.S3_NOTIFICATION,
    "aws:sns": MessageKind.LAMBDA_SNS,
    "aws:sqs": MessageKind.LAMBDA_SQS,
}
# What may be nested where: S3 publishes notifications and test events to SNS; a queue may
# receive those, SNS envelopes, or EventBridge events; only Lambda sees the rest.
_SNS_MESSAGE_KINDS = frozenset({MessageKind.S3_NOTIFICATION, MessageKind.TEST_EVENT})
_SQS_BODY_KINDS = _SNS_MESSAGE_KINDS | {MessageKind.SNS_NOTIFICATION, MessageKind.EVENTBRIDGE}
_ALL_KINDS = frozenset(_SHAPES)

# EventBridge detail-type (+ reason / deletion-type) -> S3 event-name form, as mapped in
# the S3 User Guide's "Amazon EventBridge mapping and troubleshooting" table.
_EVENTBRIDGE_CREATED_REASONS = {
    "PutObject": "ObjectCreated:Put",
    "POST Object": "ObjectCreated:Post",
    "PostObject": "ObjectCreated:Post",
    "CopyObject": "ObjectCreated:Copy",
    "CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
}
_EVENTBRIDGE_DELETED_REASONS = {
    "DeleteObject": "ObjectRemoved",
    "Lifecycle Expiration": "LifecycleExpiration",
}
_EVENTBRIDGE_DELETION_TYPES = {
    "Permanently Deleted": "Delete",
    "Delete Marker Created": "DeleteMarkerCreated",
}
_EVENTBRIDGE_FIXED_NAMES = {
    "Object Restore Initiated": "ObjectRestore:Post",
    "Object Restore Completed": "ObjectRestore:Completed",
    "Object Restore Expired": "ObjectRestore:Delete",
    "Object Storage Class Changed": "LifecycleTransition",
    "Object Access Tier Changed": "IntelligentTiering",
    "Object Tags Added": "ObjectTagging:Put",
    "Object Tags Deleted": "ObjectTagging:Delete",
    "Object ACL Updated": "ObjectAcl:Put",
}
EVENTBRIDGE_DETAIL_TYPES = ("Object Created", "Object Deleted", *_EVENTBRIDGE_FIXED_NAMES)
_BATCH_SCHEMA_VERSIONS = ("1.0", "2.0")


@dataclass(frozen=True)
class ParsedMessage:
    """What one payload held: its shape, its events, and whether it was only an s3:TestEvent.

    A test event yields no events; callers acknowledge it and run nothing.
    """

    kind: str
    events: tuple[S3Event, ...] = ()
    is_test_event: bool = False


@dataclass(frozen=True)
class SqsRecord:
    """One message of a Lambda SQS event; `message_id` is what `batchItemFailures` reports."""

    message_id: str
    body: str
    receipt_handle: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False)


def parse_events(payload: Payload) -> list[S3Event]:
    """Every `S3Event` in a payload of any accepted shape (dict, or JSON text/bytes)."""
    return list(parse_message(payload).events)


def parse_message(payload: Payload) -> ParsedMessage:
    """Parse a payload of any accepted shape, keeping its kind and test-event flag."""
    return _parse(_load(payload), "$", _ALL_KINDS)


def message_kind(payload: Payload) -> str:
    """The `MessageKind` of a payload, checked only as deep as needed to tell (no events)."""
    return _kind_of(_load(payload), "$")


def sqs_records(payload: Payload) -> list[SqsRecord]:
    """The messages of a Lambda SQS event, unparsed, so each can succeed or fail on its own."""
    document = _load(payload)
    kind = _kind_of(document, "$")
    if kind != MessageKind.LAMBDA_SQS:
        raise MalformedMessage(f"$: expected a Lambda SQS event, found {_describe(kind)}")
    return [_sqs_record(record, f"$.Records[{i}]") for i, record in enumerate(document["Records"])]


# --- shape detection -------------------------------------------------------------------------


def _parse(document: Mapping[str, Any], where: str, allowed: frozenset[str]) -> ParsedMessage:
    kind = _kind_of(document, where)
    if kind not in allowed:
        expected = ", ".join(sorted(_describe(k) for k in allowed))
        raise MalformedMessage(
            f"{where}: {_describe(kind)} cannot be nested here; expected {expected}"
        )
    return _PARSERS[kind](document, where)


def _kind_of(document: Mapping[str, Any], where: str) -> str:
    if "Records" in document:
        return _records_kind(document, where)
    if "Type" in document and ("TopicArn" in document or "Message" in document):
        return MessageKind.SNS_NOTIFICATION
    if document.get("Event") == "s3:TestEvent":
        return MessageKind.TEST_EVENT
    if document.get("source") == "aws.s3" and "detail-type" in document:
        return MessageKind.EVENTBRIDGE
    if "invocationSchemaVersion" in document:
        return MessageKind.BATCH_OPERATIONS
    keys = ", ".join(repr(key) for key in sorted(map(str, document))[:20]) or "none"
    raise MalformedMessage(
        f"{where}: not an envelope s3tasks understands. Expected "
        + "; or ".join(ACCEPTED_SHAPES)
        + f". Found a JSON object with top-level keys: {keys}"
    )


def _records_kind(document: Mapping[str, Any], where: str) -> str:
    records = document["Records"]
    if not isinstance(records, list) or not records:
        raise MalformedMessage(f"{where}.Records: expected a non-empty list of records")
    kinds = set()
    for i, record in enumerate(records):
        record_where = f"{where}.Records[{i}]"
        if not isinstance(record, Mapping):
            raise MalformedMessage(f"{record_where}: expected an object, found {_type(record)}")
        # S3 and SQS records spell it eventSource; Lambda's SNS records spell it EventSource.
        source = record.get("eventSource", record.get("EventSource"))
        if not isinstance(source, str) or source not in _RECORD_KINDS:
            raise MalformedMessage(
                f"{record_where}.eventSource is {source!r}; s3tasks accepts records from "
                + ", ".join(_RECORD_KINDS)
            )
        kinds.add(_RECORD_KINDS[source])
        if len(kinds) > 1:
            raise MalformedMessage(f"{record_where}: mixes {source} with other record sources")
    return kinds.pop()


def _describe(kind: str) -> str:
    return _SHAPES[kind][0]


# --- one parser per shape --------------------------------------------------------------------


def _parse_s3_notification(document: Mapping[str, Any], where: str) -> ParsedMessage:
    events = tuple(
        _s3_record_event(record, f"{where}.Records[{i}]")
        for i, record in enumerate(document["Records"])
    )
    return ParsedMessage(MessageKind.S3_NOTIFICATION, events)


def _s3_record_event(record: Mapping[str, Any], where: str) -> S3Event:
    s3 = _required(record, "s3", where, Mapping)
    bucket = _required(s3, "bucket", f"{where}.s3", Mapping)
    obj = _required(s3, "object", f"{where}.s3", Mapping)
    object_where = f"{where}.s3.object"
    return S3Event(
        bucket=_required(bucket, "name", f"{where}.s3.bucket", str),
        # The S3 notification format URL-encodes keys ("red flower.jpg" -> "red+flower.jpg").
        key=_decode_key(_required(obj, "key", object_where, str), f"{object_where}.key"),
        event_name=_required(record, "eventName", where, str).removeprefix("s3:"),
        event_time=_time(record.get("eventTime"), f"{where}.eventTime"),
        size=_size(obj.get("size"), f"{object_where}.size"),
        etag=_optional_str(obj, "eTag", object_where),
        version_id=_optional_str(obj, "versionId", object_where),
        sequencer=_optional_str(obj, "sequencer", object_where),  # moto leaves it out
        region=_optional_str(record, "awsRegion", where),
        source=EventSource.S3,
        raw=dict(record),
    )


def _parse_sns_notification(document: Mapping[str, Any], where: str) -> ParsedMessage:
    sns_type = document.get("Type")
    if sns_type != "Notification":
        raise MalformedMessage(
            f"{where}.Type is {sns_type!r}: only SNS 'Notification' messages carry S3 events "
            "(confirm a subscription through its SubscribeURL, then it delivers notifications)"
        )
    message = _required(document, "Message", where, str)
    inner = _parse(_load_json(message, f"{where}.Message"), f"{where}.Message", _SNS_MESSAGE_KINDS)
    events = tuple(replace(event, source=EventSource.SNS) for event in inner.events)
    return ParsedMessage(MessageKind.SNS_NOTIFICATION, events, inner.is_test_event)


def _parse_lambda_sns(document: Mapping[str, Any], where: str) -> ParsedMessage:
    parts = []
    for i, record in enumerate(document["Records"]):
        sns = _required(record, "Sns", f"{where}.Records[{i}]", Mapping)
        parts.append(_parse_sns_notification(sns, f"{where}.Records[{i}].Sns"))
    return _combine(MessageKind.LAMBDA_SNS, parts)


def _parse_lambda_sqs(document: Mapping[str, Any], where: str) -> ParsedMessage:
    parts = []
    for i, record in enumerate(document["Records"]):
        body_where = f"{where}.Records[{i}].body"
        body = _sqs_record(record, f"{where}.Records[{i}]").body
        parts.append(_parse(_load_json(body, body_where), body_where, _SQS_BODY_KINDS))
    return _combine(MessageKind.LAMBDA_SQS, parts)


def _combine(kind: str, parts: list[ParsedMessage]) -> ParsedMessage:
    events = tuple(event for part in parts for event in part.events)
    return ParsedMessage(kind, events, all(part.is_test_event for part in parts))


def _sqs_record(record: Mapping[str, Any], where: str) -> SqsRecord:
    attributes = record.get("attributes")
    return SqsRecord(
        message_id=_required(record, "messageId", where, str),
        body=_required(record, "body", where, str),
        receipt_handle=_optional_str(record, "receiptHandle", where),
        attributes=dict(attributes) if isinstance(attributes, Mapping) else {},
    )


def _parse_test_event(document: Mapping[str, Any], where: str) -> ParsedMessage:
    return ParsedMessage(MessageKind.TEST_EVENT, (), is_test_event=True)


def _parse_eventbridge(document: Mapping[str, Any], where: str) -> ParsedMessage:
    detail = _required(document, "detail", where, Mapping)
    detail_where = f"{where}.detail"
    bucket = _required(detail, "bucket", detail_where, Mapping)
    obj = _required(detail, "object", detail_where, Mapping)
    object_where = f"{detail_where}.object"
    event = S3Event(
        bucket=_required(bucket, "name", f"{detail_where}.bucket", str),
        # Not decoded: the S3 User Guide documents URL-encoding for the notification format
        # only, and real EventBridge events carry keys verbatim (e.g. ":" arrives as ":",
        # where a notification sends "%3A"), so decoding here would corrupt "+" and "%XX".
        key=_required(obj, "key", object_where, str),
        event_name=_eventbridge_event_name(document, detail, where),
        event_time=_time(document.get("time"), f"{where}.time"),
        size=_size(obj.get("size"), f"{object_where}.size"),
        # AWS spells it "etag"; moto's EventBridge emulation spells it "eTag".
        etag=_optional_str(obj, "etag", object_where) or _optional_str(obj, "eTag", object_where),
        version_id=_optional_str(obj, "version-id", object_where),
        sequencer=_optional_str(obj, "sequencer", object_where),
        region=_optional_str(document, "region", where),
        source=EventSource.EVENTBRIDGE,
        raw=dict(document),
    )
    return ParsedMessage(MessageKind.EVENTBRIDGE, (event,))


def _eventbridge_event_name(
    document: Mapping[str, Any], detail: Mapping[str, Any], where: str
) -> str:
    detail_type = _required(document, "detail-type", where, str)
    reason_where, deletion_where = f"{where}.detail.reason", f"{where}.detail.deletion-type"
    if detail_type == "Object Created":
        reason = _one_of(detail.get("reason"), _EVENTBRIDGE_CREATED_REASONS, reason_where)
        return _EVENTBRIDGE_CREATED_REASONS[reason]
    if detail_type == "Object Deleted":
        reason = _one_of(detail.get("reason"), _EVENTBRIDGE_DELETED_REASONS, reason_where)
        deletion = _one_of(detail.get("deletion-type"), _EVENTBRIDGE_DELETION_TYPES, deletion_where)
        return f"{_EVENTBRIDGE_DELETED_REASONS[reason]}:{_EVENTBRIDGE_DELETION_TYPES[deletion]}"
    _one_of(detail_type, EVENTBRIDGE_DETAIL_TYPES, f"{where}.detail-type")
    return _EVENTBRIDGE_FIXED_NAMES[detail_type]


def _one_of(value: Any, choices: Collection[str], where: str) -> str:
    if isinstance(value, str) and value in choices:
        return value
    raise MalformedMessage(f"{where} is {value!r}; expected one of {', '.join(map(repr, choices))}")


def _parse_batch_operations(document: Mapping[str, Any], where: str) -> ParsedMessage:
    version_where = f"{where}.invocationSchemaVersion"
    version = _one_of(
        document.get("invocationSchemaVersion"), _BATCH_SCHEMA_VERSIONS, version_where
    )
    invocation_id = _required(document, "invocationId", where, str)
    job = _required(document, "job", where, Mapping)
    job_id = _required(job, "id", f"{where}.job", str)
    user_arguments = job.get("userArguments") or {}
    if not isinstance(user_arguments, Mapping):
        raise MalformedMessage(f"{where}.job.userArguments: expected an object")
    events = []
    for i, task in enumerate(_required(document, "tasks", where, list)):
        task_where = f"{where}.tasks[{i}]"
        if not isinstance(task, Mapping):
            raise MalformedMessage(f"{task_where}: expected an object, found {_type(task)}")
        task_id = _required(task, "taskId", task_where, str)
        batch = BatchTask(version, invocation_id, task_id, job_id, dict(user_arguments))
        events.append(
            S3Event(
                bucket=_batch_bucket(task, task_where, version),
                # "keys from S3 Batch Operations are URL encoded" (S3 User Guide, Invoke Lambda)
                key=_decode_key(_required(task, "s3Key", task_where, str), f"{task_where}.s3Key"),
                event_name=BATCH_OPERATIONS_EVENT_NAME,
                version_id=_optional_str(task, "s3VersionId", task_where),
                source=EventSource.BATCH_OPERATIONS,
                raw=dict(task),
                batch=batch,
            )
        )
    return ParsedMessage(MessageKind.BATCH_OPERATIONS, tuple(events))


def _batch_bucket(task: Mapping[str, Any], where: str, version: str) -> str:
    """Schema 2.0 names the bucket (`s3Bucket`); 1.0 gives its ARN (`s3BucketArn`)."""
    if task.get("s3Bucket") is not None:
        return _required(task, "s3Bucket", where, str)
    if task.get("s3BucketArn") is None:
        expected = "s3BucketArn" if version == "1.0" else "s3Bucket"
        raise MalformedMessage(f"{where}: missing required field {expected!r}")
    arn = _required(task, "s3BucketArn", where, str)
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "s3" and parts[5]:
        return parts[5]
    raise MalformedMessage(f"{where}.s3BucketArn is {arn!r}; expected arn:aws:s3:::<bucket>")


_PARSERS: dict[str, Callable[[Mapping[str, Any], str], ParsedMessage]] = {
    MessageKind.S3_NOTIFICATION: _parse_s3_notification,
    MessageKind.SNS_NOTIFICATION: _parse_sns_notification,
    MessageKind.LAMBDA_SNS: _parse_lambda_sns,
    MessageKind.LAMBDA_SQS: _parse_lambda_sqs,
    MessageKind.EVENTBRIDGE: _parse_eventbridge,
    MessageKind.TEST_EVENT: _parse_test_event,
    MessageKind.BATCH_OPERATIONS: _parse_batch_operations,
}


# --- fields ----------------------------------------------------------------------------------


def _load(payload: Payload) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    if isinstance(payload, str | bytes | bytearray):
        return _load_json(payload, "$")
    raise MalformedMessage(f"$: expected a dict or JSON text/bytes, found {_type(payload)}")


def _load_json(text: str | bytes | bytearray, where: str) -> Mapping[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        preview = text[:80].decode("utf-8", "replace") if not isinstance(text, str) else text[:80]
        raise MalformedMessage(f"{where}: not JSON ({exc}); it starts {preview!r}") from exc
    if not isinstance(document, dict):
        raise MalformedMessage(f"{where}: expected a JSON object, found {_type(document)}")
    return document


def _decode_key(encoded: str, where: str) -> str:
    """URL-decode a key once, form-style: `+` is a space, `%2B` a plus, `%2F` a slash."""
    try:
        return unquote_plus(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"{where}: {encoded!r} does not decode to UTF-8") from exc


def _required(container: Mapping[str, Any], name: str, where: str, kind: type) -> Any:
    value = container.get(name)
    if value is None or (not value and isinstance(value, str | list | Mapping)):
        raise MalformedMessage(f"{where}: missing (or empty) required field {name!r}")
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = _TYPE_NAMES.get(kind, "an object")
        raise MalformedMessage(f"{where}.{name}: expected {expected}, found {_type(value)}")
    return value


def _optional_str(container: Mapping[str, Any], name: str, where: str) -> str:
    value = container.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedMessage(f"{where}.{name}: expected a string, found {_type(value)}")
    return value


def _size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MalformedMessage(f"{where}: expected a size in bytes, found {value!r}")


def _time(value: Any, where: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text (AWS) or epoch seconds (moto's EventBridge)."""
    if value is None or value == "":
        raise MalformedMessage(f"{where}: missing required event time")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedMessage(f"{where}: expected an ISO-8601 time, found {_type(value)}")
    try:
        if not isinstance(value, str):
            return datetime.fromtimestamp(value, tz=UTC)
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise MalformedMessage(f"{where}: {value!r} is not an ISO-8601 time") from None
    # AWS times are UTC; one without an offset is read as UTC, never as local time.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _type(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string"}
