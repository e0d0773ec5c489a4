"""Lambda's SQS trigger (`{"Records": [aws:sqs]}`): each record's body is another envelope.

`sqs_records` reads each record on its own: a record without a body fails alone (its
`problem` says why) instead of failing the invocation, and so the batch, around it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s3tasks.envelopes.eventbridge import parse_eventbridge
from s3tasks.envelopes.fields import excerpt, load_json, required
from s3tasks.envelopes.limits import storable
from s3tasks.envelopes.s3 import parse_s3_notification, parse_test_event
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage, Parser, combine, parse_as
from s3tasks.envelopes.sns import parse_sns_notification
from s3tasks.exceptions import MalformedMessage

# A queue may receive what S3 publishes directly, SNS envelopes, or EventBridge events.
_SQS_BODY_PARSERS: dict[str, Parser] = {
    MessageKind.S3_NOTIFICATION: parse_s3_notification,
    MessageKind.TEST_EVENT: parse_test_event,
    MessageKind.SNS_NOTIFICATION: parse_sns_notification,
    MessageKind.EVENTBRIDGE: parse_eventbridge,
}
MAX_RECEIVE_COUNT = 2**31 - 1  # what an integer column holds; SQS counts far lower
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")


@dataclass(frozen=True)
class SqsRecord:
    """One message of a Lambda SQS event; `message_id` is what `batchItemFailures` reports.

    `problem` says why the record itself is unusable (no body, an odd message id): it fails
    alone. `message_id` is "" when the record has none, so it cannot be reported alone.
    """

    message_id: str
    body: str
    receipt_handle: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False)
    receive_count: int = 1
    queue_name: str = ""
    problem: str = ""


def parse_lambda_sqs(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """All events of all the records' bodies, as one message (any bad record fails it)."""
    parts = []
    for i, record in enumerate(document["Records"]):
        record_where = f"{where}.Records[{i}]"
        sqs = sqs_record(record, record_where)
        if sqs.problem:
            raise MalformedMessage(sqs.problem)
        body_where = f"{record_where}.body"
        parts.append(parse_as(load_json(sqs.body, body_where), body_where, _SQS_BODY_PARSERS))
    return combine(MessageKind.LAMBDA_SQS, parts)


def sqs_record(record: Mapping[str, Any], where: str) -> SqsRecord:
    """One Lambda SQS record, body left unparsed; never raises (see `SqsRecord.problem`)."""
    message_id = record.get("messageId")
    identified = isinstance(message_id, str) and bool(message_id)
    attributes = record.get("attributes")
    attributes = dict(attributes) if isinstance(attributes, Mapping) else {}
    receipt_handle = record.get("receiptHandle")
    body = record.get("body")
    problem = ""
    try:
        required(record, "messageId", where, str)
        required(record, "body", where, str)
        if not storable(message_id):
            raise MalformedMessage(f"{where}.messageId {excerpt(message_id)} is no SQS id")
    except MalformedMessage as exc:
        problem = str(exc)
    return SqsRecord(
        message_id=message_id if identified else "",
        body=body if isinstance(body, str) else "",  # kept even with a problem, for the record
        receipt_handle=receipt_handle if isinstance(receipt_handle, str) else "",
        attributes=attributes,
        receive_count=_receive_count(attributes),
        queue_name=_queue_name(record.get("eventSourceARN")),
        problem=problem,
    )


def _receive_count(attributes: Mapping[str, Any]) -> int:
    count = attributes.get("ApproximateReceiveCount")
    if isinstance(count, str) and count.isascii() and count.isdigit() and len(count) < 10:
        return min(max(int(count), 1), MAX_RECEIVE_COUNT)
    return 1


def _queue_name(arn: Any) -> str:
    """The queue's name from `eventSourceARN` (arn:aws:sqs:region:account:name), or ""."""
    name = arn.rsplit(":", 1)[-1] if isinstance(arn, str) else ""
    return name if _QUEUE_NAME.fullmatch(name) else ""
