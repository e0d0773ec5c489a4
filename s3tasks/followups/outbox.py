"""The outbox relay: send committed follow-up commands at least once, with backoff on failure.

Two triggers share one code path: right after the writing transaction commits
(`relay_after_commit`: every entry that transaction wrote, together) and periodically
(`relay_outbox()`, run by `sqs_worker` and `manage.py s3tasks_relay`), which picks up whatever
a crash left behind. A pass takes up to ten entries through two steps:

1. claim, in one short transaction: the entries' `available_at` moves `CLAIM_SECONDS` ahead
   (rows locked with `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, one conditional UPDATE
   per row elsewhere), so no other relay takes them and no lock is held while AWS answers;
2. for each entry: send it (one request), then mark it sent with one UPDATE at once; a failure
   gets an exponential backoff instead.

A duplicate needs the process to die (or the database to go away) between AWS accepting a send
and its mark: one request plus one UPDATE per entry, the least an at-least-once relay can do.
Sending several entries per request (`SendMessageBatch`) was measured to widen that window:
every entry of a batch waits for the whole batch (docs/benchmarks.md, "Chaos"). A process that
dies after claiming leaves its unsent entries to the periodic relay once the claim expires:
late, never lost.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from s3tasks.exceptions import UnknownTarget
from s3tasks.models import OutboxKind, OutboxMessage, Queue, Topic
from s3tasks.text import ERROR_LIMIT, truncate

logger = logging.getLogger(__name__)

IDEMPOTENCY_ATTRIBUTE = "s3tasks-idempotency-key"
MAX_BACKOFF_SECONDS = 300
# A live relay is never raced for its entries: its clients give up after CONNECT + READ
# seconds and never retry by themselves (the outbox's backoff is the retry), and it starts no
# send that could end after its claim. A dead relay's entries are sent again this long after
# it claimed them.
CLAIM_SECONDS = 15
CONNECT_TIMEOUT, READ_TIMEOUT = 2, 5
CLAIM_BATCH = 10  # entries claimed per pass (then sent one by one)

_resolved: dict[tuple[str, ...], str] = {}
_local = threading.local()
_client_config: list[Any] = []  # the relay's botocore Config, built on first use


# --- triggers -----------------------------------------------------------------------------


def relay_after_commit(message_id: int) -> None:
    """Send `message_id` as soon as the current transaction commits (best effort), in one
    relay pass with the other entries the same transaction wrote."""
    if not transaction.get_connection().in_atomic_block:
        _relay_now([message_id])  # autocommit: the row is already committed
        return
    batch = _current_batch()
    if batch is None:
        batch = _AfterCommit()
        _local.batch = weakref.ref(batch)
        transaction.on_commit(batch)  # Django's callback list holds the only strong reference
    batch.ids.append(message_id)


class _AfterCommit:
    """The entries written by one transaction of this thread, relayed together on commit."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.done = False

    def __call__(self) -> None:
        self.done = True
        _relay_now(self.ids)


def _current_batch() -> _AfterCommit | None:
    """The open batch of this thread's transaction, or None.

    A rollback (of the transaction, or of the savepoint it was registered in) makes Django
    drop the callback, which frees the batch: the weak reference then answers None, so entries
    written later start a new batch rather than joining one that will never run. Entries of a
    rolled-back savepoint that joined a surviving batch are simply not found when it runs.
    """
    ref = getattr(_local, "batch", None)
    batch = ref() if ref is not None else None
    return batch if batch is not None and not batch.done else None


def _relay_now(ids: list[int]) -> None:
    try:
        relay_messages(ids)
    except Exception:  # the periodic relay will pick it up; never break the caller
        logger.exception("s3tasks: immediate outbox relay failed; the periodic relay will retry")


def relay_outbox(limit: int = 100) -> int:
    """Send up to `limit` due, unsent entries; returns how many were sent."""
    sent = tried = 0
    while tried < limit:
        due = OutboxMessage.objects.filter(sent_at__isnull=True, available_at__lte=timezone.now())
        result = _relay_pass(due.order_by("available_at", "pk"), min(CLAIM_BATCH, limit - tried))
        if result is None:
            break
        tried += result[0]
        sent += result[1]
    return sent


def relay_messages(ids: Iterable[int]) -> int:
    """Send the given entries now if still unsent and not claimed by another relay or backing
    off; returns how many were sent."""
    wanted = list(dict.fromkeys(ids))
    sent = 0
    for start in range(0, len(wanted), CLAIM_BATCH):
        chunk = wanted[start : start + CLAIM_BATCH]
        candidates = OutboxMessage.objects.filter(
            pk__in=chunk, sent_at__isnull=True, available_at__lte=timezone.now()
        )
        result = _relay_pass(candidates.order_by("pk"), len(chunk))
        sent += result[1] if result else 0
    return sent


# --- claim, send, mark ----------------------------------------------------------------------


def _relay_pass(candidates: QuerySet[OutboxMessage], size: int) -> tuple[int, int] | None:
    """Claim up to `size` candidates, then send and mark them one by one: (claimed, sent);
    None if there was none."""
    last_start = time.monotonic() + CLAIM_SECONDS - CONNECT_TIMEOUT - READ_TIMEOUT
    claimed = _claim(candidates, size)
    if not claimed:
        return None
    sent = 0
    for index, message in enumerate(claimed):
        if time.monotonic() > last_start:  # a send begun now could outlive the claim
            _release(claimed[index:])
            break
        try:
            deliver(message)
        except Exception as exc:
            _back_off(message, exc)
        else:
            # Right after its own send, not after the others': an entry is exposed to a
            # duplicate (AWS accepted it, the mark is not committed) for one request only.
            OutboxMessage.objects.filter(pk=message.pk).update(
                sent_at=timezone.now(), last_error=""
            )
            sent += 1
    return len(claimed), sent


def _claim(candidates: QuerySet[OutboxMessage], size: int) -> list[OutboxMessage]:
    """Take up to `size` candidates for `CLAIM_SECONDS`; committed before anything is sent."""
    now = timezone.now()
    until = now + timedelta(seconds=CLAIM_SECONDS)
    with transaction.atomic():
        locking = connection.features.has_select_for_update_skip_locked
        if locking:
            candidates = candidates.select_for_update(skip_locked=True)
        rows = list(candidates[:size])
        if not rows:
            return []
        if locking:  # ours alone until commit: one statement claims them all
            _claim_rows([m.pk for m in rows], until)
            claimed = rows
        else:  # no row locks: a row is ours only if our conditional UPDATE changed it
            claimed = [m for m in rows if _claim_rows([m.pk], until, due_by=now)]
    for message in claimed:
        message.attempts += 1
        message.available_at = until
    return claimed


def _claim_rows(pks: list[int], until: datetime, due_by: datetime | None = None) -> int:
    rows = OutboxMessage.objects.filter(pk__in=pks, sent_at__isnull=True)
    if due_by is not None:
        rows = rows.filter(available_at__lte=due_by)
    return rows.update(available_at=until, attempts=F("attempts") + 1)


def _release(messages: list[OutboxMessage]) -> None:
    """Hand claimed, unsent entries back at once, as if never claimed."""
    OutboxMessage.objects.filter(pk__in=[m.pk for m in messages], sent_at__isnull=True).update(
        available_at=timezone.now(), attempts=F("attempts") - 1
    )


def _back_off(message: OutboxMessage, exc: BaseException) -> None:
    delay = min(2**message.attempts, MAX_BACKOFF_SECONDS)
    OutboxMessage.objects.filter(pk=message.pk).update(
        available_at=timezone.now() + timedelta(seconds=delay),
        last_error=truncate(f"{type(exc).__name__}: {exc}", ERROR_LIMIT),
    )
    logger.warning(
        "s3tasks: could not send outbox entry %s (%s → %s, attempt %d), retry in %ds: %s",
        message.pk,
        message.kind,
        message.target,
        message.attempts,
        delay,
        exc,
    )


# --- delivery (the I/O edge) --------------------------------------------------------------


def deliver(message: OutboxMessage) -> None:
    """Send one entry to Celery, SQS or SNS; raises on failure."""
    if message.kind == OutboxKind.CELERY:
        send_celery(message)
    elif message.kind == OutboxKind.SQS:
        send_sqs(relay_client("sqs"), message)
    elif message.kind == OutboxKind.SNS:
        send_sns(relay_client("sns"), message)
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


def relay_client(service: str) -> Any:
    """The relay's boto3 client for `service`: short timeouts, no retries (see CLAIM_SECONDS)."""
    from s3tasks.aws import client

    if not _client_config:
        from botocore.config import Config

        _client_config.append(
            Config(
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"total_max_attempts": 1},
            )
        )
    return client(service, config=_client_config[0])


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
