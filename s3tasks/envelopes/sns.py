"""SNS envelopes: the JSON notification SQS receives without raw delivery, and Lambda's
SNS trigger (`{"Records": [aws:sns]}`), both wrapping an S3 notification or test event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from s3tasks.envelopes.fields import load_json, required
from s3tasks.envelopes.s3 import parse_s3_notification, parse_test_event
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage, Parser, combine, parse_as
from s3tasks.events import EventSource
from s3tasks.exceptions import MalformedMessage

# S3 publishes only notifications and test events to SNS.
_SNS_MESSAGE_PARSERS: dict[str, Parser] = {
    MessageKind.S3_NOTIFICATION: parse_s3_notification,
    MessageKind.TEST_EVENT: parse_test_event,
}


def parse_sns_notification(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """`{"Type": "Notification", "Message": "<S3 JSON>"}`; events are marked as via SNS."""
    sns_type = document.get("Type")
    if sns_type != "Notification":
        raise MalformedMessage(
            f"{where}.Type is {sns_type!r}: only SNS 'Notification' messages carry S3 events "
            "(confirm a subscription through its SubscribeURL, then it delivers notifications)"
        )
    message = required(document, "Message", where, str)
    message_where = f"{where}.Message"
    inner = parse_as(load_json(message, message_where), message_where, _SNS_MESSAGE_PARSERS)
    events = tuple(replace(event, source=EventSource.SNS) for event in inner.events)
    return ParsedMessage(MessageKind.SNS_NOTIFICATION, events, inner.is_test_event)


def parse_lambda_sns(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """Lambda's SNS trigger: each record's `Sns` is an SNS notification."""
    parts = []
    for i, record in enumerate(document["Records"]):
        sns = required(record, "Sns", f"{where}.Records[{i}]", Mapping)
        parts.append(parse_sns_notification(sns, f"{where}.Records[{i}].Sns"))
    return combine(MessageKind.LAMBDA_SNS, parts)
