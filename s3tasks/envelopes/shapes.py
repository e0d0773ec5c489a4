"""Payload shapes: the kinds s3tasks accepts, how a document's kind is told, and dispatch.

Every parser is `(document, where) -> ParsedMessage`; an envelope that nests another
(SNS, SQS) passes `parse_as` the table of parsers allowed inside it, so what may be nested
where is stated by the nesting module itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from s3tasks.envelopes.fields import excerpt, type_name
from s3tasks.events import S3Event
from s3tasks.exceptions import MalformedMessage


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


@dataclass(frozen=True)
class ParsedMessage:
    """What one payload held: its shape, its events, and whether it was only an s3:TestEvent.

    A test event yields no events; callers acknowledge it and run nothing.
    """

    kind: str
    events: tuple[S3Event, ...] = ()
    is_test_event: bool = False


Parser = Callable[[Mapping[str, Any], str], ParsedMessage]


def parse_as(
    document: Mapping[str, Any], where: str, parsers: Mapping[str, Parser]
) -> ParsedMessage:
    """Parse `document` with the parser for its kind; kinds not in `parsers` are refused."""
    kind = kind_of(document, where)
    if kind not in parsers:
        expected = ", ".join(sorted(describe(k) for k in parsers))
        raise MalformedMessage(
            f"{where}: {describe(kind)} cannot be nested here; expected {expected}"
        )
    return parsers[kind](document, where)


def combine(kind: str, parts: list[ParsedMessage]) -> ParsedMessage:
    """One message of `kind` from its records' parts; a test event only if all parts are."""
    events = tuple(event for part in parts for event in part.events)
    return ParsedMessage(kind, events, all(part.is_test_event for part in parts))


def kind_of(document: Mapping[str, Any], where: str) -> str:
    """The `MessageKind` of a document, from its top-level keys (and record sources)."""
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
    keys = ", ".join(excerpt(key, 40) for key in sorted(map(str, document))[:20]) or "none"
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
            raise MalformedMessage(f"{record_where}: expected an object, found {type_name(record)}")
        # S3 and SQS records spell it eventSource; Lambda's SNS records spell it EventSource.
        source = record.get("eventSource", record.get("EventSource"))
        if not isinstance(source, str) or source not in _RECORD_KINDS:
            raise MalformedMessage(
                f"{record_where}.eventSource is {excerpt(source)}; s3tasks accepts records from "
                + ", ".join(_RECORD_KINDS)
            )
        kinds.add(_RECORD_KINDS[source])
        if len(kinds) > 1:
            raise MalformedMessage(f"{record_where}: mixes {source} with other record sources")
    return kinds.pop()


def describe(kind: str) -> str:
    """A kind's name for error messages ("an SNS notification")."""
    return _SHAPES[kind][0]
