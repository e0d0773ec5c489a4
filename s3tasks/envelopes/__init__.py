"""Envelope parsing: every payload shape that carries S3 changes becomes a list of `S3Event`.

Modules follow the data flow: `fields` (JSON and typed field readers), `limits` (what S3
and the database columns allow: every event is checked there), `shapes` (kinds, detection,
dispatch), then one module per envelope — `s3` (notification records and the one place keys
are URL-decoded, exactly once per envelope that encodes them), `eventbridge`, `sns`, `sqs`
(bodies nest the others), `batch_operations`. Parsing is all or nothing: a malformed record
anywhere makes the whole call raise `MalformedMessage` — whatever the bytes, never another
exception — whose text says what was expected and quotes at most ~200 characters of what
was found. `sqs_records` is the exception: it splits a Lambda SQS event so that each record
succeeds or fails on its own.
"""

from __future__ import annotations

from s3tasks.envelopes.batch_jobs import parse_batch_operations
from s3tasks.envelopes.eventbridge import EVENTBRIDGE_DETAIL_TYPES, parse_eventbridge
from s3tasks.envelopes.fields import Payload, load
from s3tasks.envelopes.s3 import parse_s3_notification, parse_test_event
from s3tasks.envelopes.shapes import (
    ACCEPTED_SHAPES,
    MessageKind,
    ParsedMessage,
    Parser,
    describe,
    kind_of,
    parse_as,
)
from s3tasks.envelopes.sns import parse_lambda_sns, parse_sns_notification
from s3tasks.envelopes.sqs import SqsRecord, parse_lambda_sqs, sqs_record
from s3tasks.events import S3Event
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

# Every shape is accepted at the top level; nesting envelopes narrow this themselves.
_PARSERS: dict[str, Parser] = {
    MessageKind.S3_NOTIFICATION: parse_s3_notification,
    MessageKind.SNS_NOTIFICATION: parse_sns_notification,
    MessageKind.LAMBDA_SNS: parse_lambda_sns,
    MessageKind.LAMBDA_SQS: parse_lambda_sqs,
    MessageKind.EVENTBRIDGE: parse_eventbridge,
    MessageKind.TEST_EVENT: parse_test_event,
    MessageKind.BATCH_OPERATIONS: parse_batch_operations,
}


def parse_events(payload: Payload) -> list[S3Event]:
    """Every `S3Event` in a payload of any accepted shape (dict, or JSON text/bytes)."""
    return list(parse_message(payload).events)


def parse_message(payload: Payload) -> ParsedMessage:
    """Parse a payload of any accepted shape, keeping its kind and test-event flag."""
    return parse_as(load(payload), "$", _PARSERS)


def message_kind(payload: Payload) -> str:
    """The `MessageKind` of a payload, checked only as deep as needed to tell (no events)."""
    return kind_of(load(payload), "$")


def sqs_records(payload: Payload) -> list[SqsRecord]:
    """The messages of a Lambda SQS event, unparsed, so each can succeed or fail on its own."""
    document = load(payload)
    kind = kind_of(document, "$")
    if kind != MessageKind.LAMBDA_SQS:
        raise MalformedMessage(f"$: expected a Lambda SQS event, found {describe(kind)}")
    return [sqs_record(record, f"$.Records[{i}]") for i, record in enumerate(document["Records"])]
