"""The Lambda entrypoint: `s3tasks.lambda_handler.handler` (the container image's `CMD`).

Thin wiring only. Django is configured once per container, then each invocation is sorted by
its trigger:

- SQS event source mapping → the records go through the batch core the worker uses
  (`s3tasks.batch.process_messages`, in chunks); the answer lists only failed records in
  `batchItemFailures`, so Lambda deletes the rest (enable `ReportBatchItemFailures`).
- S3 trigger, SNS trigger, EventBridge `aws.s3` event → the same core, one message; a failure
  raises, so Lambda's asynchronous retries and on-failure destination / DLQ apply.
- S3 Batch Operations (schema 1.0 / 2.0) → `s3tasks.batch_operations`.

Imports stay lazy: on the SQS path nothing imports boto3 (Lambda deletes the successes itself),
which keeps cold starts close to a bare `django.setup()`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from s3tasks.exceptions import S3TasksError

logger = logging.getLogger(__name__)

_django_ready = False

# SQS records per `process_messages` call: one transaction each, and a time check between them
SQS_CHUNK = 10

ACCEPTED_TRIGGERS = (
    "an SQS event source mapping batch",
    "an S3 notification (S3 trigger)",
    "an SNS trigger",
    "an EventBridge event from aws.s3",
    "an S3 Batch Operations invocation (schema 1.0 or 2.0)",
)


def handler(event: Any, context: Any = None) -> dict[str, Any] | None:
    """Handle one Lambda invocation of any trigger s3tasks understands."""
    setup_django()
    from s3tasks.envelopes import MessageKind

    release_stale_connections()
    try:
        kind = trigger_kind(event)
        if kind == MessageKind.LAMBDA_SQS:
            return handle_sqs_batch(event, context)
        if kind == MessageKind.BATCH_OPERATIONS:
            from s3tasks.batch_operations import handle_invocation

            return handle_invocation(event)
        return handle_notification(event, context)
    finally:
        relay_leftover_commands(context)
        release_stale_connections()


def relay_leftover_commands(context: Any = None) -> None:
    """Send follow-up commands an earlier, timed-out or frozen invocation left in the outbox.

    Each handler's commands are sent right after its transaction commits; this catches the
    ones that missed that moment (the worker does the same on a timer). Skipped when the
    invocation is out of time; never fails the invocation.
    """
    from s3tasks.conf import get_settings

    if _out_of_time(context, get_settings().LAMBDA_TIME_MARGIN_MS):
        return
    try:
        from s3tasks.outbox import relay_outbox

        sent = relay_outbox(limit=50)
    except Exception:  # the commands stay in the outbox for the next invocation
        logger.exception("s3tasks: could not relay leftover follow-up commands")
        return
    if sent:
        logger.info("s3tasks: relayed %d leftover follow-up command(s)", sent)


def release_stale_connections() -> None:
    """Drop database connections that died or outlived `CONN_MAX_AGE` (as Django does around
    each request): a frozen container may thaw hours later with a dead connection.

    Connections inside a caller's transaction are left alone (closing would break it).
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def setup_django() -> None:
    """Configure Django once per container; say what to set when the settings are unknown."""
    global _django_ready
    if _django_ready:
        return
    from django.apps import apps

    if not apps.ready:
        if not os.environ.get("DJANGO_SETTINGS_MODULE"):
            from s3tasks.exceptions import S3TasksConfigurationError

            raise S3TasksConfigurationError(
                "DJANGO_SETTINGS_MODULE is not set. Set it in the function's environment or "
                'the image (ENV DJANGO_SETTINGS_MODULE="mysite.settings") so '
                "s3tasks.lambda_handler can configure Django."
            )
        import django

        django.setup()
    _django_ready = True


def trigger_kind(event: Any) -> str:
    """The `MessageKind` of an invocation payload; a clear `MalformedMessage` otherwise."""
    from s3tasks.envelopes import MessageKind, message_kind
    from s3tasks.exceptions import MalformedMessage

    if not isinstance(event, Mapping):
        raise MalformedMessage(
            f"s3tasks.lambda_handler got {type(event).__name__}, not a JSON object; it accepts "
            + "; ".join(ACCEPTED_TRIGGERS)
        )
    try:
        kind = message_kind(event)
    except MalformedMessage as exc:
        raise MalformedMessage(
            "s3tasks.lambda_handler accepts " + "; ".join(ACCEPTED_TRIGGERS) + f". {exc}"
        ) from exc
    if kind == MessageKind.SNS_NOTIFICATION:
        # A bare SNS envelope only ever arrives inside an SQS body, never as a Lambda event.
        raise MalformedMessage(
            "s3tasks.lambda_handler got a bare SNS envelope; an SNS trigger delivers "
            '{"Records": [{"EventSource": "aws:sns", "Sns": {...}}]}. It accepts '
            + "; ".join(ACCEPTED_TRIGGERS)
        )
    return kind


def handle_sqs_batch(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Process an SQS batch; report only the records to redeliver (`batchItemFailures`).

    Records go through the batch core in chunks of `SQS_CHUNK` (one transaction each); the
    remaining time is checked before each chunk, and records not started when less than
    `LAMBDA_TIME_MARGIN_MS` is left are reported for redelivery.
    """
    from s3tasks.batch import InboundMessage, process_messages
    from s3tasks.conf import get_settings
    from s3tasks.envelopes import sqs_records

    settings = get_settings()
    records = sqs_records(event)
    raw_records = event["Records"]
    failures: list[str] = []
    for start in range(0, len(records), SQS_CHUNK):
        if _out_of_time(context, settings.LAMBDA_TIME_MARGIN_MS):
            left = [r.message_id for r in records[start:]]
            logger.warning(
                "s3tasks: less than %d ms left; %d message(s) not started, left for redelivery",
                settings.LAMBDA_TIME_MARGIN_MS,
                len(left),
            )
            failures.extend(left)
            break
        chunk = [
            InboundMessage(
                message_id=record.message_id,
                body=record.body,
                receive_count=_receive_count(record.attributes),
                queue_name=_queue_name(raw_records[index]),
                attributes=dict(record.attributes),
            )
            for index, record in enumerate(records[start : start + SQS_CHUNK], start)
        ]
        outcomes = process_messages(chunk, dispatch_mode=settings.LAMBDA_DISPATCH)
        failures.extend(o.message_id for o in outcomes if not o.deletable)
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def handle_notification(event: Mapping[str, Any], context: Any = None) -> None:
    """An S3/SNS/EventBridge trigger: run its events; raise on failure so Lambda retries."""
    from s3tasks.batch import InboundMessage, Status, process_message
    from s3tasks.conf import get_settings
    from s3tasks.exceptions import MalformedMessage

    request_id = str(getattr(context, "aws_request_id", "") or "")
    message = InboundMessage(message_id=request_id, body=dict(event), queue_name="lambda")
    outcome = process_message(message, dispatch_mode=get_settings().LAMBDA_DISPATCH)
    if outcome.status == Status.MALFORMED:
        raise MalformedMessage(outcome.error)
    if not outcome.deletable:
        raise HandlersFailed(f"s3tasks: {outcome.error or 'a handler failed'}")
    return None


class HandlersFailed(S3TasksError, RuntimeError):
    """Raised for an asynchronous trigger whose handlers failed, so Lambda retries the event."""


def _out_of_time(context: Any, margin_ms: int) -> bool:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining is not None and remaining() < margin_ms


def _receive_count(attributes: Mapping[str, Any]) -> int:
    try:
        return int(attributes.get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


def _queue_name(raw_record: Any) -> str:
    """The queue's name from the record's `eventSourceARN` (arn:aws:sqs:region:acct:name)."""
    arn = raw_record.get("eventSourceARN", "") if isinstance(raw_record, Mapping) else ""
    return arn.rsplit(":", 1)[-1] if isinstance(arn, str) else ""
