"""Events and routes for the tests, in one place (test modules never import each other).

Events are built with `s3tasks.testing`, so every one is parsed from the notification S3
would send: keys travel URL-encoded and are decoded by the production parser.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from s3tasks.envelopes import parse_events
from s3tasks.events import EventSource, S3Event
from s3tasks.rules.routing import Route
from s3tasks.testing import s3_notification, s3_record, sns_envelope

DISPATCH_BUCKET = "dispatch-bucket"
EVENT_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_event(
    key: str = "in/a.csv",
    *,
    bucket: str = DISPATCH_BUCKET,
    source: str = EventSource.S3,
    **flags: Any,
) -> S3Event:
    """An upload (`ObjectCreated:Put`) of `key`; the same arguments always give the same event
    (same dedup key), so a second call is a redelivery.

    `source=EventSource.SNS` delivers it through an SNS envelope. `flags` are added to the
    event's raw record for the test handlers that read them (`crash`, `notify_queue`).
    """
    record = s3_record(bucket, key, size=12, etag="abc", sequencer="00A1", event_time=EVENT_TIME)
    body = s3_notification(record)
    if source == EventSource.SNS:
        body = sns_envelope(body)
    elif source != EventSource.S3:
        raise ValueError(f"make_event builds S3 or SNS events, not {source!r}")
    [event] = parse_events(body)
    return replace(event, raw={**event.raw, **flags}) if flags else event


def routes(*handler_names: str) -> list[Route]:
    """Routes to `handler_names`, as routing would return them for a matching rule."""
    return [Route(handler_name=name) for name in handler_names]


def add_runs(
    handler: str,
    state: str,
    durations: list[float | None],
    *,
    ago: timedelta = timedelta(minutes=5),
    unfinished_task_id: str = "",
) -> None:
    """One run of `handler` per duration (None: not finished), created `ago`, each on its own
    event; unfinished runs get `unfinished_task_id` as their Celery task id."""
    from django.utils import timezone

    from s3tasks.models import EventRecord, HandlerRun

    created = timezone.now() - ago
    for duration in durations:
        event = EventRecord.objects.create(
            dedup_key=uuid.uuid4().hex,
            bucket="uploads",
            key=f"in/{uuid.uuid4().hex}.csv",
            event_name="ObjectCreated:Put",
            source=EventSource.S3,
        )
        HandlerRun.objects.create(
            event=event,
            handler_name=handler,
            state=state,
            attempts=1,
            created_at=created,
            duration_ms=duration,
            celery_task_id=unfinished_task_id if duration is None else "",
        )
