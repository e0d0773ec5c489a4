"""The outbox relay: send committed follow-up commands at least once, with backoff on failure.

Two triggers share one code path: right after the writing transaction commits
(`relay_after_commit`, best effort) and periodically (`relay_outbox()`, run by `sqs_worker`
and `manage.py s3tasks_relay`), which picks up whatever a crash left behind. Each entry is
sent and marked sent under a row lock (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL;
SQLite serialises writers), so several relays never send the same entry twice unless a
process dies between the send and the commit — hence the idempotency key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from s3tasks.exceptions import S3TasksError
from s3tasks.models import OutboxKind, OutboxMessage, Queue, Topic
from s3tasks.text import ERROR_LIMIT, truncate

logger = logging.getLogger(__name__)

IDEMPOTENCY_ATTRIBUTE = "s3tasks-idempotency-key"
MAX_BACKOFF_SECONDS = 300

_resolved: dict[tuple[str, ...], str] = {}


class UnknownTarget(S3TasksError, LookupError):
    """A follow-up command names a queue or topic that neither the models nor AWS know."""


# --- triggers -----------------------------------------------------------------------------


def relay_after_commit(message_id: int) -> None:
    """Send `message_id` as soon as the current transaction commits (best effort)."""
    transaction.on_commit(lambda: _relay_now([message_id]))


def _relay_now(ids: list[int]) -> None:
    try:
        relay_messages(ids)
    except Exception:  # the periodic relay will pick it up; never break the caller
        logger.exception("s3tasks: immediate outbox relay failed; the periodic relay will retry")


def relay_outbox(limit: int = 100) -> int:
    """Send up to `limit` due, unsent entries; returns how many were sent."""
    sent = 0
    for _ in range(limit):
        due = OutboxMessage.objects.filter(sent_at__isnull=True, available_at__lte=timezone.now())
        result = _relay_one(due.order_by("available_at", "pk"))
        if result is None:
            break
        sent += result
    return sent


def relay_messages(ids: Iterable[int]) -> int:
    """Send the given entries now if still unsent (ignores backoff); returns how many were sent."""
    sent = 0
    for pk in ids:
        sent += _relay_one(OutboxMessage.objects.filter(pk=pk, sent_at__isnull=True)) or 0
    return sent


def _relay_one(candidates: QuerySet[OutboxMessage]) -> int | None:
    """Lock, send and mark the first candidate: 1 sent, 0 failed, None if there was none."""
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        message = candidates.first()
        if message is None:
            return None
        message.attempts += 1
        try:
            deliver(message)
        except Exception as exc:
            delay = min(2**message.attempts, MAX_BACKOFF_SECONDS)
            message.available_at = timezone.now() + timedelta(seconds=delay)
            message.last_error = truncate(f"{type(exc).__name__}: {exc}", ERROR_LIMIT)
            message.save(update_fields=["attempts", "available_at", "last_error"])
            logger.warning(
                "s3tasks: could not send outbox entry %s (%s → %s, attempt %d), retry in %ds: %s",
                message.pk,
                message.kind,
                message.target,
                message.attempts,
                delay,
                exc,
            )
            return 0
        message.sent_at = timezone.now()
        message.last_error = ""
        message.save(update_fields=["attempts", "sent_at", "last_error"])
        return 1


# --- delivery (the I/O edge) --------------------------------------------------------------


def deliver(message: OutboxMessage) -> None:
    """Send one entry to Celery, SQS or SNS; raises on failure."""
    if message.kind == OutboxKind.CELERY:
        send_celery(message)
    elif message.kind == OutboxKind.SQS:
        from s3tasks.aws import client

        send_sqs(client("sqs"), message)
    elif message.kind == OutboxKind.SNS:
        from s3tasks.aws import client

        send_sns(client("sns"), message)
    else:
        raise ValueError(f"unknown outbox kind {message.kind!r}")


def send_celery(message: OutboxMessage) -> None:
    """Send the task; the idempotency key is the Celery task id (duplicates share it)."""
    from celery import current_app

    payload = message.payload
    options: dict[str, Any] = {"task_id": str(message.idempotency_key), "serializer": "json"}
    if payload.get("queue"):
        options["queue"] = payload["queue"]
    if payload.get("countdown") is not None:
        options["countdown"] = payload["countdown"]
    args, kwargs = payload.get("args") or [], payload.get("kwargs") or {}
    task = current_app.tasks.get(message.target)
    if task is not None:  # apply_async honours task_always_eager; send_task would not
        task.apply_async(args=args, kwargs=kwargs, **options)
    else:
        current_app.send_task(message.target, args=args, kwargs=kwargs, **options)


def message_attributes(message: OutboxMessage) -> dict[str, Any]:
    """User attributes in SQS/SNS form, plus the idempotency key."""
    result: dict[str, Any] = {}
    for name, value in (message.payload.get("attributes") or {}).items():
        if isinstance(value, dict):
            result[name] = value  # already {"DataType": ..., "StringValue": ...}
        elif isinstance(value, int | float) and not isinstance(value, bool):
            result[name] = {"DataType": "Number", "StringValue": str(value)}
        else:
            result[name] = {"DataType": "String", "StringValue": str(value)}
    result[IDEMPOTENCY_ATTRIBUTE] = {
        "DataType": "String",
        "StringValue": str(message.idempotency_key),
    }
    return result


def send_sqs(sqs: Any, message: OutboxMessage) -> None:
    payload = message.payload
    params: dict[str, Any] = {
        "QueueUrl": queue_url(sqs, message.target),
        "MessageBody": payload["body"],
        "MessageAttributes": message_attributes(message),
    }
    fifo = _fifo_params(message)
    params.update(fifo)
    if not fifo and payload.get("delay_seconds") is not None:  # FIFO queues refuse a delay
        params["DelaySeconds"] = int(payload["delay_seconds"])
    sqs.send_message(**params)


def send_sns(sns: Any, message: OutboxMessage) -> None:
    payload = message.payload
    params: dict[str, Any] = {
        "TopicArn": topic_arn(sns, message.target),
        "Message": payload["message"],
        "MessageAttributes": message_attributes(message),
    }
    if payload.get("subject"):
        params["Subject"] = payload["subject"]
    params.update(_fifo_params(message))
    sns.publish(**params)


def _fifo_params(message: OutboxMessage) -> dict[str, str]:
    """Group and deduplication ids when the target queue/topic is FIFO; {} otherwise."""
    if not message.target.endswith(".fifo"):
        return {}
    payload = message.payload
    return {
        "MessageGroupId": payload["group_id"],
        "MessageDeduplicationId": payload.get("deduplication_id") or str(message.idempotency_key),
    }


# --- name → URL / ARN ---------------------------------------------------------------------


def queue_url(sqs: Any, name: str) -> str:
    """The URL of queue `name`: from the `Queue` model, else `get_queue_url`."""

    def ask_aws() -> str:
        try:
            return sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            raise UnknownTarget(
                f"SQS queue {name!r} does not exist in {sqs.meta.region_name} and no Queue row "
                "has its URL. Add it in the admin (Queue) and run `manage.py "
                "sync_notifications`, or create the queue, or fix the name."
            ) from None

    return _resolve(sqs, "sqs", name, Queue, "url", ask_aws)


def topic_arn(sns: Any, name: str) -> str:
    """The ARN of topic `name`: from the `Topic` model, else by listing topics (no create)."""

    def ask_aws() -> str:
        for page in sns.get_paginator("list_topics").paginate():
            arn = next(
                (t["TopicArn"] for t in page["Topics"] if t["TopicArn"].split(":")[-1] == name),
                None,
            )
            if arn:
                return arn
        raise UnknownTarget(
            f"SNS topic {name!r} does not exist in {sns.meta.region_name} and no Topic row has "
            "its ARN. Add it in the admin (Topic) and run `manage.py sync_notifications`, or "
            "create the topic, or fix the name."
        )

    return _resolve(sns, "sns", name, Topic, "arn", ask_aws)


def _resolve(
    aws: Any,
    kind: str,
    name: str,
    model: type[Queue | Topic],
    column: str,
    ask_aws: Callable[[], str],
) -> str:
    """`name`'s URL/ARN, cached per endpoint and region: the model's `column`, else `ask_aws()`."""
    meta = aws.meta
    key = (kind, meta.endpoint_url, meta.region_name, name)
    if key not in _resolved:
        rows = model.objects.filter(name=name).exclude(**{column: ""})
        _resolved[key] = rows.values_list(column, flat=True).first() or ask_aws()
    return _resolved[key]


def forget_resolved_names() -> None:
    """Drop cached queue URLs / topic ARNs (tests that recreate resources)."""
    _resolved.clear()
