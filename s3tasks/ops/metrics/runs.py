"""Handler runs as metric observations, taken from s3tasks' own lifecycle signals.

`run_succeeded` and `run_failed` are sent in whichever process ran the handler (`sqs_worker`
inline, a Celery worker, the Lambda entrypoint), so one pair of receivers serves every
entrypoint. Each finished attempt becomes a `RunObservation` handed to every sink (Prometheus,
the Lambda's EMF line) added with `add_sink`. A sink's error is logged, never raised: metrics
must not fail the run they describe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.utils import timezone

from s3tasks import signals
from s3tasks.events import EventSource, S3Event

logger = logging.getLogger(__name__)

AttemptOutcome = Literal["succeeded", "retrying", "failed"]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = ("succeeded", "retrying", "failed")

# Sources whose `eventTime` is when the object changed; a backfill's is the object's
# LastModified, a Batch Operations or admin event's says nothing about waiting.
NOTIFICATION_SOURCES = frozenset({EventSource.S3, EventSource.SNS, EventSource.EVENTBRIDGE})

Sink = Callable[["RunObservation"], None]
_DISPATCH_UID = "s3tasks.ops.metrics.runs"


@dataclass(frozen=True)
class RunObservation:
    """One finished attempt of a handler: how it ended, how long the handler took, and, once
    the run has ended (succeeded or failed for good), how long after the S3 change."""

    handler: str
    outcome: AttemptOutcome
    duration_seconds: float | None
    lag_seconds: float | None


def event_lag_seconds(event: S3Event, finished_at: datetime | None) -> float | None:
    """Seconds from the S3 change (`eventTime`) to `finished_at`; None when the event carries
    no change time (backfill, Batch Operations, admin test events) or either time is missing.

    A clock behind S3's gives a small negative difference: it counts as 0.
    """
    if event.event_time is None or finished_at is None:
        return None
    if event.source not in NOTIFICATION_SOURCES:
        return None
    if timezone.is_naive(finished_at):  # USE_TZ = False: Django's naive times are local
        finished_at = timezone.make_aware(finished_at)
    return max(0.0, (finished_at - event.event_time).total_seconds())


def observation(run: Any, event: S3Event, outcome: AttemptOutcome) -> RunObservation:
    """The observation of a `HandlerRun` whose attempt just ended with `outcome`."""
    duration = run.duration_ms / 1000 if run.duration_ms is not None else None
    ended = outcome != "retrying"
    return RunObservation(
        handler=run.handler_name,
        outcome=outcome,
        duration_seconds=duration,
        lag_seconds=event_lag_seconds(event, run.finished_at) if ended else None,
    )


class _Sinks:
    """The sinks, replaced as a whole under a lock so `send` never sees a half-updated list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: tuple[Sink, ...] = ()

    def add(self, sink: Sink) -> None:
        with self._lock:
            if sink not in self.items:
                self.items = (*self.items, sink)

    def remove(self, sink: Sink) -> None:
        with self._lock:
            self.items = tuple(s for s in self.items if s != sink)

    def send(self, seen: RunObservation) -> None:
        for sink in self.items:
            try:
                sink(seen)
            except Exception:
                logger.exception("s3tasks: a metrics sink failed on a run of %s", seen.handler)


_sinks = _Sinks()


def add_sink(sink: Sink) -> None:
    """Hand every finished attempt of this process to `sink` (connects the receivers once)."""
    observe_runs()
    _sinks.add(sink)


def remove_sink(sink: Sink) -> None:
    _sinks.remove(sink)


def observe_runs() -> None:
    """Connect the signal receivers (idempotent)."""
    signals.run_succeeded.connect(_succeeded, dispatch_uid=_DISPATCH_UID)
    signals.run_failed.connect(_failed, dispatch_uid=_DISPATCH_UID)


def _succeeded(sender: Any, run: Any, event: S3Event, **kwargs: Any) -> None:
    _observe(run, event, "succeeded")


def _failed(sender: Any, run: Any, event: S3Event, permanent: bool = False, **kwargs: Any) -> None:
    _observe(run, event, "failed" if permanent else "retrying")


def _observe(run: Any, event: S3Event, outcome: AttemptOutcome) -> None:
    if not _sinks.items:
        return
    try:
        seen = observation(run, event, outcome)
    except Exception:  # a metrics bug must not break the run's reporting
        logger.exception("s3tasks: could not measure a run of %s", run.handler_name)
        return
    _sinks.send(seen)
