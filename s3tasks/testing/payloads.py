"""Payloads shaped exactly as AWS sends them, for tests: S3 notification records, the SNS,
SQS and Lambda envelopes around them, EventBridge events and s3:TestEvent.

Keys are written the way each envelope carries them (notifications URL-encode them: "red
flower.csv" travels as "red+flower.csv"), so a test that parses these payloads decodes keys
exactly as production does. Every builder returns a plain dict (JSON-safe); nested envelopes
carry their inner payload as JSON text, as AWS does.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote_plus

from s3tasks.conf import get_settings
from s3tasks.envelopes import parse_events
from s3tasks.events import EventSource, S3Event
from s3tasks.rules.filters import S3_EVENT_TYPES


class _Auto:
    """The default of a field whose value depends on the event (see each builder)."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO: Final[Any] = _Auto()

EMPTY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"  # the ETag (MD5) of an empty object
ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DEFAULT_QUEUE = "s3tasks-events"
DEFAULT_TOPIC = "s3tasks-events"

# Events after which the object is gone: S3 sends neither its size nor its ETag.
_NO_OBJECT_PREFIXES = ("ObjectRemoved:", "LifecycleExpiration:")

# S3 event name -> (EventBridge detail-type, reason, deletion-type), per the S3 User Guide's
# "EventBridge mapping" table (the inverse of what s3tasks.envelopes.eventbridge reads).
_EVENTBRIDGE_NAMES: dict[str, tuple[str, str | None, str | None]] = {
    "ObjectCreated:Put": ("Object Created", "PutObject", None),
    "ObjectCreated:Post": ("Object Created", "POST Object", None),
    "ObjectCreated:Copy": ("Object Created", "CopyObject", None),
    "ObjectCreated:CompleteMultipartUpload": ("Object Created", "CompleteMultipartUpload", None),
    "ObjectRemoved:Delete": ("Object Deleted", "DeleteObject", "Permanently Deleted"),
    "ObjectRemoved:DeleteMarkerCreated": (
        "Object Deleted",
        "DeleteObject",
        "Delete Marker Created",
    ),
    "LifecycleExpiration:Delete": ("Object Deleted", "Lifecycle Expiration", "Permanently Deleted"),
    "LifecycleExpiration:DeleteMarkerCreated": (
        "Object Deleted",
        "Lifecycle Expiration",
        "Delete Marker Created",
    ),
    "ObjectRestore:Post": ("Object Restore Initiated", None, None),
    "ObjectRestore:Completed": ("Object Restore Completed", None, None),
    "ObjectRestore:Delete": ("Object Restore Expired", None, None),
    "LifecycleTransition": ("Object Storage Class Changed", None, None),
    "IntelligentTiering": ("Object Access Tier Changed", None, None),
    "ObjectTagging:Put": ("Object Tags Added", None, None),
    "ObjectTagging:Delete": ("Object Tags Deleted", None, None),
    "ObjectAcl:Put": ("Object ACL Updated", None, None),
}
EVENTBRIDGE_EVENT_NAMES = tuple(_EVENTBRIDGE_NAMES)

_sequencer_lock = threading.Lock()
_last_sequencer = 0


def next_sequencer() -> str:
    """A new S3-style sequencer (hex), greater than every one this process made before."""
    global _last_sequencer
    with _sequencer_lock:
        _last_sequencer = max(_last_sequencer + 1, time.time_ns())
        return f"{_last_sequencer:018X}"


def encode_key(key: str) -> str:
    """A key as S3 notifications carry it: form-encoded, `/` kept (`a b+c` -> `a+b%2Bc`)."""
    return quote_plus(key, safe="/")


def s3_record(
    bucket: str,
    key: str,
    *,
    event_name: str = "ObjectCreated:Put",
    size: int | None = AUTO,
    etag: str | None = AUTO,
    version_id: str | None = None,
    sequencer: str | None = AUTO,
    event_time: datetime | None = None,
    region: str = DEFAULT_REGION,
    configuration_id: str = "s3tasks-test",
) -> dict[str, Any]:
    """One `Records[]` entry of an S3 event notification, with `key` URL-encoded.

    `event_name` is an S3 event type, with or without `s3:` (`ObjectCreated:Put`). By default
    the object is empty (`size` 0, the empty object's `etag`), except after a removal or an
    expiration, when S3 sends neither; pass None to leave a field out. `sequencer` defaults to
    a new, increasing value (so each call is a distinct change), `event_time` to now.
    """
    name = event_type(event_name)
    has_object = not name.startswith(_NO_OBJECT_PREFIXES)
    obj: dict[str, Any] = {"key": encode_key(key)}
    if size is AUTO:
        size = 0 if has_object else None
    if etag is AUTO:
        etag = EMPTY_ETAG if has_object else None
    if sequencer is AUTO:
        sequencer = next_sequencer()
    for field_name, value in (
        ("size", size),
        ("eTag", etag),
        ("versionId", version_id),
        ("sequencer", sequencer),
    ):
        if value is not None:
            obj[field_name] = value
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": aws_time(event_time, milliseconds=True),
        "eventName": name,
        "userIdentity": {"principalId": f"AWS:{ACCOUNT_ID}:s3tasks-test"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
            "x-amz-id-2": uuid.uuid4().hex,
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKEXAMPLE"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_notification(*records: Mapping[str, Any] | S3Event) -> dict[str, Any]:
    """The body S3 sends to a queue, a topic (raw delivery) or Lambda: `{"Records": [...]}`.

    Each record is an `s3_record(...)` dict or an event made by `make_s3_event` (its record).
    """
    if not records:
        raise ValueError("s3_notification() needs at least one record: S3 never sends none.")
    return {"Records": [_record_of(record) for record in records]}


def make_s3_event(bucket: str, key: str, **fields: Any) -> S3Event:
    """An `S3Event` as s3tasks reads it from S3's notification (the key encoded on the way and
    decoded by the parser, exactly as in production). Takes the arguments of `s3_record`."""
    [event] = parse_events(s3_notification(s3_record(bucket, key, **fields)))
    return event


def s3_test_event(bucket: str, *, event_time: datetime | None = None) -> dict[str, Any]:
    """The `s3:TestEvent` S3 sends when a notification configuration is saved (no Records)."""
    return {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": aws_time(event_time, milliseconds=True),
        "Bucket": bucket,
        "RequestId": uuid.uuid4().hex[:16].upper(),
        "HostId": uuid.uuid4().hex,
    }


def sns_envelope(
    message: Mapping[str, Any] | str,
    *,
    topic: str = DEFAULT_TOPIC,
    subject: str | None = "Amazon S3 Notification",
    region: str = DEFAULT_REGION,
    message_id: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """The SNS notification a queue receives from a topic without raw message delivery
    (`message`, e.g. an `s3_notification`, travels as JSON text in `Message`)."""
    topic_arn = f"arn:aws:sns:{region}:{ACCOUNT_ID}:{topic}"
    envelope: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic_arn,
        "Message": _json_text(message),
        "Timestamp": aws_time(timestamp, milliseconds=True),
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": f"https://sns.{region}.amazonaws.com/SimpleNotificationService-0.pem",
        "UnsubscribeURL": (
            f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe"
            f"&SubscriptionArn={topic_arn}:{uuid.uuid4()}"
        ),
    }
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def lambda_sns_event(*envelopes: Mapping[str, Any]) -> dict[str, Any]:
    """What Lambda's SNS trigger passes the function: one record per `sns_envelope(...)`."""
    if not envelopes:
        raise ValueError("lambda_sns_event() needs at least one sns_envelope(...).")
    records = []
    for envelope in envelopes:
        subscription = f"{envelope.get('TopicArn', '')}:{uuid.uuid4()}"
        records.append(
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription,
                "Sns": {"MessageAttributes": {}, **envelope},
            }
        )
    return {"Records": records}


def sqs_message(
    body: Mapping[str, Any] | str,
    *,
    queue: str = DEFAULT_QUEUE,
    region: str = DEFAULT_REGION,
    message_id: str | None = None,
    receive_count: int = 1,
    sent_at: datetime | None = None,
) -> dict[str, Any]:
    """One record of Lambda's SQS trigger carrying `body` (a dict is sent as JSON text).

    `receive_count` is SQS's `ApproximateReceiveCount` (above 1 for a redelivery).
    """
    text = _json_text(body)
    sent_ms = str(int((sent_at or datetime.now(UTC)).timestamp() * 1000))
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": f"AQEB{uuid.uuid4().hex}",
        "body": text,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": sent_ms,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": sent_ms,
        },
        "messageAttributes": {},
        "md5OfBody": _md5(text),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{region}:{ACCOUNT_ID}:{queue}",
        "awsRegion": region,
    }


def lambda_sqs_event(*messages: Mapping[str, Any]) -> dict[str, Any]:
    """What Lambda's SQS trigger passes the function: `{"Records": [sqs_message(...), ...]}`."""
    if not messages:
        raise ValueError("lambda_sqs_event() needs at least one sqs_message(...).")
    return {"Records": [dict(message) for message in messages]}


def eventbridge_event(
    bucket: str,
    key: str,
    *,
    event_name: str = "ObjectCreated:Put",
    size: int | None = AUTO,
    etag: str | None = AUTO,
    version_id: str | None = None,
    sequencer: str | None = AUTO,
    event_time: datetime | None = None,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """An S3 event as EventBridge delivers it ("Object Created", "Object Deleted", ...).

    `event_name` is the S3 event type it maps to (one of `EVENTBRIDGE_EVENT_NAMES`); the
    other arguments are those of `s3_record`. The key is written as
    `S3TASKS["EVENTBRIDGE_KEYS"]` says EventBridge writes keys (verbatim by default).
    """
    name = event_type(event_name)
    if name not in _EVENTBRIDGE_NAMES:
        raise ValueError(
            f"EventBridge carries no {name!r} events; use one of "
            + ", ".join(EVENTBRIDGE_EVENT_NAMES)
        )
    detail_type, reason, deletion_type = _EVENTBRIDGE_NAMES[name]
    has_object = detail_type != "Object Deleted"
    written_key = encode_key(key) if get_settings().EVENTBRIDGE_KEYS == "url-encoded" else key
    obj: dict[str, Any] = {"key": written_key}
    for field_name, value in (
        ("size", (0 if has_object else None) if size is AUTO else size),
        ("etag", EMPTY_ETAG if etag is AUTO else etag),  # deletions carry one too
        ("version-id", version_id),
        ("sequencer", next_sequencer() if sequencer is AUTO else sequencer),
    ):
        if value is not None:
            obj[field_name] = value
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": obj,
        "request-id": uuid.uuid4().hex[:16].upper(),
        "requester": ACCOUNT_ID,
        "source-ip-address": "127.0.0.1",
    }
    if reason is not None:
        detail["reason"] = reason
    if deletion_type is not None:
        detail["deletion-type"] = deletion_type
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": ACCOUNT_ID,
        "time": aws_time(event_time, milliseconds=False),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": detail,
    }


def event_type(event_name: str) -> str:
    """`s3:ObjectCreated:Put` or `ObjectCreated:Put` -> `ObjectCreated:Put`; a ValueError for
    wildcards and names S3 never sends."""
    name = event_name.removeprefix("s3:")
    if name not in S3_EVENT_TYPES or name.endswith("*"):
        raise ValueError(
            f"{event_name!r} is not an event S3 sends; use a name such as 'ObjectCreated:Put', "
            "'ObjectCreated:CompleteMultipartUpload' or 'ObjectRemoved:Delete' (no wildcards)."
        )
    return name


def aws_time(when: datetime | None, *, milliseconds: bool) -> str:
    """`when` (default: now) in UTC as AWS writes it: `2024-05-01T09:15:27.604Z`."""
    when = when or datetime.now(UTC)
    # AWS times are UTC; a naive datetime is read as UTC, as the parsers read AWS's.
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if milliseconds:
        text += f".{when.microsecond // 1000:03d}"
    return text + "Z"


def _record_of(record: Mapping[str, Any] | S3Event) -> dict[str, Any]:
    if not isinstance(record, S3Event):
        return dict(record)
    if record.source != EventSource.S3 or "s3" not in record.raw:
        raise ValueError(
            f"{record!r} carries no S3 notification record; build it with make_s3_event() or "
            "pass s3_record(...) instead."
        )
    return dict(record.raw)


def _json_text(value: Mapping[str, Any] | str) -> str:
    """A nested payload as AWS nests it: JSON text without spaces."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
