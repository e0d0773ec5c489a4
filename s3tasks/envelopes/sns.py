"""SNS envelopes: the JSON notification SQS receives without raw delivery, and Lambda's
SNS trigger (`{"Records": [aws:sns]}`), both wrapping an S3 notification or test event, or
an EventBridge event (an EventBridge rule whose target is the topic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from s3tasks.envelopes.eventbridge import parse_eventbridge
from s3tasks.envelopes.fields import excerpt, load_json, required
from s3tasks.envelopes.s3 import parse_s3_notification, parse_test_event
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage, Parser, combine, parse_as
from s3tasks.events import EventSource
from s3tasks.exceptions import MalformedMessage

# S3 publishes notifications and test events to SNS; an EventBridge rule may target a topic.
_SNS_MESSAGE_PARSERS: dict[str, Parser] = {
    MessageKind.S3_NOTIFICATION: parse_s3_notification,
    MessageKind.TEST_EVENT: parse_test_event,
    MessageKind.EVENTBRIDGE: parse_eventbridge,
}


def parse_sns_notification(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """`{"Type": "Notification", "Message": "<S3 JSON>"}`; S3 notifications are marked as via
    SNS, EventBridge events keep their source (it says how to read `raw`)."""
    sns_type = document.get("Type")
    if sns_type != "Notification":
        raise MalformedMessage(
            f"{where}.Type is {excerpt(sns_type)}: only SNS 'Notification' messages carry S3 "
            "events (confirm a subscription through its SubscribeURL, then it delivers "
            "notifications)"
        )
    message = required(document, "Message", where, str)
    message_where = f"{where}.Message"
    inner = parse_as(load_json(message, message_where), message_where, _SNS_MESSAGE_PARSERS)
    events = inner.events
    if inner.kind != MessageKind.EVENTBRIDGE:
        events = tuple(replace(event, source=EventSource.SNS) for event in events)
    return ParsedMessage(MessageKind.SNS_NOTIFICATION, events, inner.is_test_event)


def parse_lambda_sns(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """Lambda's SNS trigger: each record's `Sns` is an SNS notification."""
    parts = []
    for i, record in enumerate(document["Records"]):
        sns = required(record, "Sns", f"{where}.Records[{i}]", Mapping)
        parts.append(parse_sns_notification(sns, f"{where}.Records[{i}].Sns"))
    return combine(MessageKind.LAMBDA_SNS, parts)
