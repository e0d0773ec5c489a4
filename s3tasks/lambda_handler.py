"""The Lambda entrypoint: `s3tasks.lambda_handler.handler` (the container image's `CMD`).

Thin wiring only. Django is configured once per container, then each invocation is sorted by
its trigger:

- SQS event source mapping → the records go through the batch core the worker uses
  (`s3tasks.processing.messages.process_messages`, in chunks); the answer lists only failed
  records in `batchItemFailures`, so Lambda deletes the rest (enable
  `ReportBatchItemFailures`). Each record succeeds or fails alone, a malformed one included;
  only a record without a `messageId` (which Lambda never sends) fails the whole batch, as it
  cannot be named.
- S3 trigger, SNS trigger, EventBridge `aws.s3` event → the same core, one message; a failure
  raises, so Lambda's asynchronous retries and on-failure destination / DLQ apply.
- S3 Batch Operations (schema 1.0 / 2.0) → `s3tasks.batch_jobs`.

Every malformed message gets a `MessageFailure` row, as in `sqs_worker`
(`s3tasks.processing.message_failures`).

Imports stay lazy: on the SQS path nothing imports boto3 (Lambda deletes the successes itself),
which keeps cold starts close to a bare `django.setup()`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

# HandlersFailed and UnidentifiedRecords live in s3tasks.exceptions; importable here too.
from s3tasks.exceptions import HandlersFailed, UnidentifiedRecords

if TYPE_CHECKING:
    from s3tasks.envelopes import SqsRecord
    from s3tasks.processing.messages import InboundMessage

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
    """Handle one Lambda invocation of any trigger s3tasks understands; print its metrics as
    one CloudWatch EMF line when it ends (`S3TASKS["METRICS_NAMESPACE"]`, docs/metrics.md)."""
    setup_django()
    from s3tasks.conf import get_settings
    from s3tasks.envelopes import MessageKind
    from s3tasks.ops.metrics import emf

    release_stale_connections()
    with emf.invocation(get_settings().METRICS_NAMESPACE, context):
        try:
            kind = _trigger_kind_or_record(event, context)
            if kind == MessageKind.LAMBDA_SQS:
                return handle_sqs_batch(event, context)
            if kind == MessageKind.BATCH_OPERATIONS:
                from s3tasks.batch_jobs import handle_invocation

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
        from s3tasks.followups.outbox import relay_outbox

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
    """Configure Django and s3tasks' logs once per container; say what to set when the
    settings are unknown."""
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
    from s3tasks.logs import configure_command_logging

    # stderr, unless LOGGING or the Lambda runtime already put a handler in place (docs/lambda.md)
    configure_command_logging()
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
    `LAMBDA_TIME_MARGIN_MS` is left are reported for redelivery. A record without a
    `messageId` cannot be reported alone: the others are handled, then `UnidentifiedRecords`
    fails the whole batch so SQS keeps every message (see docs/lambda.md).
    """
    from s3tasks.envelopes import sqs_records

    records = sqs_records(event)
    failures = _process_records([r for r in records if r.message_id], context)
    unidentified = [(i, r) for i, r in enumerate(records) if not r.message_id]
    if unidentified:
        _fail_whole_batch(unidentified)
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def _process_records(records: Sequence[SqsRecord], context: Any) -> list[str]:
    """The message ids to redeliver, after running every record that time allows."""
    from s3tasks.conf import get_settings
    from s3tasks.ops.metrics import emf
    from s3tasks.processing.message_failures import record_malformed_outcomes
    from s3tasks.processing.messages import process_messages

    settings = get_settings()
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
            emf.count_messages(["released"] * len(left))
            break
        chunk = [_inbound(record) for record in records[start : start + SQS_CHUNK]]
        outcomes = process_messages(chunk, dispatch_mode=settings.LAMBDA_DISPATCH)
        record_malformed_outcomes(chunk, outcomes)  # never raises; the record is reported anyway
        failures.extend(o.message_id for o in outcomes if not o.deletable)
        emf.count_messages(o.status for o in outcomes)
    return failures


def _inbound(record: SqsRecord) -> InboundMessage:
    from s3tasks.processing.messages import InboundMessage

    return InboundMessage(
        message_id=record.message_id,
        body=record.body,
        receive_count=record.receive_count,
        queue_name=record.queue_name or "lambda",
        attributes=dict(record.attributes),
        problem=record.problem,
    )


def _fail_whole_batch(unidentified: Sequence[tuple[int, SqsRecord]]) -> None:
    """Record the records no `messageId` names, then fail the invocation (see handle_sqs_batch).

    Failing the batch is the only answer that loses nothing: Lambda redelivers every
    message of it, and handlers that already ran on the others are not run again.
    """
    from s3tasks.ops.metrics import emf
    from s3tasks.processing.message_failures import record_message_failure

    emf.count_messages(["malformed"] * len(unidentified))
    where = ", ".join(f"$.Records[{i}]" for i, _ in unidentified)
    problem = (
        f"{len(unidentified)} SQS record(s) without a messageId ({where}): batchItemFailures "
        "cannot name them, so the whole batch is reported failed and SQS redelivers all of it "
        "(handlers that already ran are not run again). Lambda always sends a messageId: check "
        "what invokes this function."
    )
    logger.error("s3tasks: %s", problem)
    for index, record in unidentified:
        try:
            record_message_failure(
                queue_name=record.queue_name or "lambda",
                message_id=_stand_in_id(index, record),
                receive_count=record.receive_count,
                reason=record.problem or problem,
                body=record.body,
            )
        except Exception:
            logger.exception("s3tasks: could not record SQS record %d without a messageId", index)
    raise UnidentifiedRecords(f"s3tasks: {problem}")


def _stand_in_id(index: int, record: SqsRecord) -> str:
    """A stable name for a record without a messageId: the same record gets the same row."""
    seed = record.body or f"record {index}"  # receipt handles change on every receive
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"(no messageId) {digest}"


def handle_notification(event: Mapping[str, Any], context: Any = None) -> None:
    """An S3/SNS/EventBridge trigger: run its events; raise on failure so Lambda retries."""
    from s3tasks.conf import get_settings
    from s3tasks.exceptions import MalformedMessage
    from s3tasks.ops.metrics import emf
    from s3tasks.processing.message_failures import record_malformed_outcomes
    from s3tasks.processing.messages import InboundMessage, Status, process_message

    message = InboundMessage(message_id=_request_id(context), body=dict(event), queue_name="lambda")
    outcome = process_message(message, dispatch_mode=get_settings().LAMBDA_DISPATCH)
    emf.count_messages([outcome.status])
    if outcome.status == Status.MALFORMED:
        record_malformed_outcomes([message], [outcome])
        raise MalformedMessage(outcome.error)
    if not outcome.deletable:
        raise HandlersFailed(f"s3tasks: {outcome.error or 'a handler failed'}")
    return None


def _trigger_kind_or_record(event: Any, context: Any) -> str:
    """`trigger_kind(event)`; an invocation it refuses also gets a `MessageFailure` row."""
    from s3tasks.exceptions import MalformedMessage
    from s3tasks.ops.metrics import emf
    from s3tasks.processing.message_failures import record_message_failure

    try:
        return trigger_kind(event)
    except MalformedMessage as exc:
        emf.count_messages(["malformed"])
        try:
            record_message_failure(
                queue_name="lambda",
                message_id=_request_id(context),
                receive_count=1,
                reason=str(exc),
                body=event,
            )
        except Exception:
            logger.exception("s3tasks: could not record the refused invocation")
        raise


def _request_id(context: Any) -> str:
    return str(getattr(context, "aws_request_id", "") or "")


def _out_of_time(context: Any, margin_ms: int) -> bool:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining is not None and remaining() < margin_ms
