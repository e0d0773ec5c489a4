"""Lambda's SQS trigger (`{"Records": [aws:sqs]}`): each record's body is another envelope."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s3tasks.envelopes.eventbridge import parse_eventbridge
from s3tasks.envelopes.fields import load_json, optional_str, required
from s3tasks.envelopes.s3 import parse_s3_notification, parse_test_event
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage, Parser, combine, parse_as
from s3tasks.envelopes.sns import parse_sns_notification

# A queue may receive what S3 publishes directly, SNS envelopes, or EventBridge events.
_SQS_BODY_PARSERS: dict[str, Parser] = {
    MessageKind.S3_NOTIFICATION: parse_s3_notification,
    MessageKind.TEST_EVENT: parse_test_event,
    MessageKind.SNS_NOTIFICATION: parse_sns_notification,
    MessageKind.EVENTBRIDGE: parse_eventbridge,
}


@dataclass(frozen=True)
class SqsRecord:
    """One message of a Lambda SQS event; `message_id` is what `batchItemFailures` reports."""

    message_id: str
    body: str
    receipt_handle: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False)


def parse_lambda_sqs(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """All events of all the records' bodies, as one message."""
    parts = []
    for i, record in enumerate(document["Records"]):
        body_where = f"{where}.Records[{i}].body"
        body = sqs_record(record, f"{where}.Records[{i}]").body
        parts.append(parse_as(load_json(body, body_where), body_where, _SQS_BODY_PARSERS))
    return combine(MessageKind.LAMBDA_SQS, parts)


def sqs_record(record: Mapping[str, Any], where: str) -> SqsRecord:
    """One Lambda SQS record, body left unparsed."""
    attributes = record.get("attributes")
    return SqsRecord(
        message_id=required(record, "messageId", where, str),
        body=required(record, "body", where, str),
        receipt_handle=optional_str(record, "receiptHandle", where),
        attributes=dict(attributes) if isinstance(attributes, Mapping) else {},
    )
