"""Idempotent bookkeeping: one `EventRecord` per dedup key, one `HandlerRun` per handler.

Both are get-or-create under a unique constraint. Two workers racing on the same event both
try to insert; the loser gets an `IntegrityError` (inside its own savepoint, so an enclosing
transaction survives) and reads the winner's row. This is what makes handling exactly-once.
"""

from __future__ import annotations

from typing import TypeVar

from django.db import IntegrityError, models, transaction
from django.db.models import QuerySet

from s3tasks.events import S3Event
from s3tasks.models import EventRecord, HandlerRun

M = TypeVar("M", bound=models.Model)

ERROR_LIMIT = 2000
SUMMARY_LIMIT = 1000


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut so nobody mistakes it for the whole."""
    return text if len(text) <= limit else text[: limit - 15] + " …[truncated]"


def _lookup(rows: QuerySet[M]) -> M | None:
    """The one row matching a unique lookup, or None. No ORDER BY: `.first()` would add the
    model's ordering, and PostgreSQL may then walk the ordering index instead of the unique one."""
    found = list(rows.order_by()[:1])
    return found[0] if found else None


def record_event(
    event: S3Event, *, message_id: str = "", queue_name: str = ""
) -> tuple[EventRecord, bool]:
    """The `EventRecord` of `event` and whether this call created it (safe under races)."""
    key = event.dedup_key
    existing = _lookup(EventRecord.objects.filter(dedup_key=key))
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return EventRecord.objects.create(
                dedup_key=key,
                bucket=event.bucket,
                key=event.key,
                event_name=event.event_name,
                event_time=event.event_time,
                size=event.size,
                etag=event.etag[:100],
                version_id=event.version_id,
                sequencer=event.sequencer[:100],
                region=event.region[:32],
                source=event.source,
                payload=event.to_dict(),
                message_id=message_id[:200],
                queue_name=queue_name[:200],
            ), True
    except IntegrityError:
        return EventRecord.objects.get(dedup_key=key), False


def ensure_run(record: EventRecord, handler_name: str, celery_queue: str = "") -> HandlerRun:
    """The run of `handler_name` for `record`, created `pending` if missing (safe under races)."""
    existing = _lookup(HandlerRun.objects.filter(event=record, handler_name=handler_name))
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return HandlerRun.objects.create(
                event=record, handler_name=handler_name, celery_queue=celery_queue[:200]
            )
    except IntegrityError:
        return HandlerRun.objects.get(event=record, handler_name=handler_name)
