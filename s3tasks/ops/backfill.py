"""Backfill: run handlers on objects already in a bucket, through the normal exactly-once path.

One more source at the left of the data flow (docs/backfill.md):

    ListObjectsV2 page ──► S3Event(s, source=backfill) ──► routing ──► dispatch_batch

Pages are listed one at a time and cut into chunks; each chunk is routed, dispatched (inline or
Celery) or enqueued to SQS for the workers, and then its counters and the last key it covered
are committed to the `Backfill` row, so memory stays flat whatever the bucket holds and an
interrupted backfill resumes after the last committed chunk. Inline, a chunk's runs and its
progress commit in one transaction. A backfill event's dedup key is its object version's
(bucket, key, version id or ETag), so backfilling again runs nothing twice.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from s3tasks import aws
from s3tasks.conf import get_settings
from s3tasks.exceptions import BackfillError
from s3tasks.models import Backfill, HandlerBinding
from s3tasks.ops.backfill_enqueue import EnqueueSender
from s3tasks.ops.backfill_objects import (
    PAGE_SIZE,
    BackfillRequest,
    S3Object,
    backfill_event,
    list_pages,
)
from s3tasks.processing.dispatch import BatchItem, DispatchOutcome, dispatch_batch
from s3tasks.rules.filters import event_matches, normalize_event_pattern
from s3tasks.rules.registry import registry
from s3tasks.rules.routing import CREATED_EVENT_NAMES, route

logger = logging.getLogger(__name__)

CHUNK_SIZE = 100  # objects dispatched and committed together
MAX_ERRORS = 20  # distinct errors a backfill keeps


@dataclass
class Counters:
    """What a backfill (or a dry run) has seen and done so far."""

    pages: int = 0
    listed: int = 0
    matched: int = 0  # objects that passed the filters and have a handler
    dispatched: int = 0  # runs run or handed to Celery; enqueued: runs handed to the workers
    skipped: int = 0  # runs an earlier delivery or backfill already did
    failed: int = 0
    per_handler: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, row: Backfill) -> Counters:
        return cls(
            row.pages,
            row.listed,
            row.matched,
            row.dispatched,
            row.skipped,
            row.failed,
            {name: dict(counts) for name, counts in row.per_handler.items()},
            list(row.errors),
        )

    def count(self, handler: str, what: str, n: int = 1) -> None:
        counts = self.per_handler.setdefault(
            handler, {"matched": 0, "dispatched": 0, "skipped": 0, "failed": 0}
        )
        counts[what] += n
        if what != "matched":
            setattr(self, what, getattr(self, what) + n)

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS and text not in self.errors:
            self.errors.append(text)

    def add(self, other: Counters) -> None:
        for name in ("pages", "listed", "matched", "dispatched", "skipped", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for handler, counts in other.per_handler.items():
            mine = self.per_handler.setdefault(handler, dict.fromkeys(counts, 0))
            for what, n in counts.items():
                mine[what] = mine.get(what, 0) + n
        for text in other.errors:
            self.error(text)

    def row_fields(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "listed": self.listed,
            "matched": self.matched,
            "dispatched": self.dispatched,
            "skipped": self.skipped,
            "failed": self.failed,
            "per_handler": self.per_handler,
            "errors": self.errors,
        }


Progress = Callable[[Counters], None]


class RateLimiter:
    """Spaces chunks so that at most `rate` objects per second are dispatched."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.rate = rate
        self.clock = clock or time.monotonic
        self.sleep = sleep or time.sleep
        self.started: float | None = None
        self.done = 0

    def wait(self, count: int) -> None:
        """Sleep until `count` more objects may go."""
        if not self.rate or not count:
            return
        now = self.clock()
        if self.started is None:
            self.started = now
        due = self.started + self.done / self.rate
        if due > now:
            self.sleep(due - now)
        self.done += count


def chunk_size_for(rate: float | None) -> int:
    """Objects per chunk: smaller with a low `--rate`, so the pace stays even."""
    return max(1, min(CHUNK_SIZE, int(rate))) if rate else CHUNK_SIZE


# --- starting and resuming ------------------------------------------------------------------


def check_request(request: BackfillRequest) -> None:
    """Refuse a backfill that cannot do anything: unknown handlers, or nothing routed."""
    unknown = [name for name in request.handlers if name not in registry]
    if unknown:
        known = ", ".join(sorted(h.name for h in registry)) or "none"
        raise BackfillError(
            f"no registered handler named {', '.join(map(repr, unknown))} (registered: {known})"
        )
    if request.mode not in Backfill.Mode.values:
        raise BackfillError(f"mode must be one of {', '.join(Backfill.Mode.values)}")
    if request.handlers:
        return
    bindings = HandlerBinding.objects.filter(
        enabled=True, rule__enabled=True, rule__bucket__name=request.bucket
    ).select_related("rule")
    if not any(_routes_creations(b.rule.events) for b in bindings):
        raise BackfillError(
            f"no enabled rule of bucket {request.bucket!r} routes object creations to a "
            "handler: bind one (admin or @on_s3_event), or name handlers with --handler"
        )


def _routes_creations(patterns: Any) -> bool:
    for pattern in patterns if isinstance(patterns, list) else ():
        try:
            normalized = normalize_event_pattern(str(pattern))
        except ValueError:
            continue
        if any(event_matches(normalized, name) for name in CREATED_EVENT_NAMES):
            return True
    return False


def start_backfill(request: BackfillRequest, *, requested_by: str = "") -> Backfill:
    """Record a new backfill, running."""
    check_request(request)
    return Backfill.objects.create(
        bucket=request.bucket,
        prefix=request.prefix,
        suffix=request.suffix,
        handlers=list(request.handlers),
        modified_since=request.modified_since,
        modified_until=request.modified_until,
        mode=request.mode,
        queue=request.queue,
        rate=request.rate,
        requested_by=requested_by[:150],
    )


def resume_backfill(backfill_id: int) -> Backfill:
    """Take over an interrupted, failed, cancelled or dead backfill; it runs again from the
    last committed chunk."""
    with transaction.atomic():
        row = Backfill.objects.select_for_update().filter(pk=backfill_id).first()
        if row is None:
            raise BackfillError(f"there is no backfill {backfill_id}")
        if row.state == Backfill.State.COMPLETED:
            raise BackfillError(f"backfill {backfill_id} is completed; nothing to resume")
        if row.state == Backfill.State.RUNNING and not row.is_stale:
            raise BackfillError(
                f"backfill {backfill_id} is running (last progress at "
                f"{row.updated_at.isoformat(timespec='seconds')}); stop that process first. A "
                "process that died without a word is taken for dead after 15 minutes without "
                "progress."
            )
        check_request(request_of(row))  # its handlers may have gone since
        row.state = Backfill.State.RUNNING
        row.finished_at = None
        row.updated_at = timezone.now()
        row.save(update_fields=["state", "finished_at", "updated_at"])
    return row


def request_of(row: Backfill) -> BackfillRequest:
    return BackfillRequest(
        bucket=row.bucket,
        prefix=row.prefix,
        suffix=row.suffix,
        handlers=tuple(row.handlers),
        modified_since=row.modified_since,
        modified_until=row.modified_until,
        mode=row.mode,
        queue=row.queue,
        rate=row.rate,
        region=get_settings().REGION,
    )


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillResult:
    backfill: Backfill
    counters: Counters

    @property
    def ok(self) -> bool:
        return self.backfill.state == Backfill.State.COMPLETED and not self.counters.failed


def run_backfill(
    row: Backfill,
    *,
    s3: Any = None,
    sqs: Any = None,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
    limiter: RateLimiter | None = None,
) -> BackfillResult:
    """List, route and dispatch (or enqueue) every object of a started or resumed backfill.

    Ends `completed`, or `cancelled` when the admin cancelled it (checked before each
    chunk). Ctrl-C leaves it `interrupted` and an error `failed`, both re-raised; either way
    the row holds everything committed so far and `--resume` goes on from there.
    """
    request = request_of(row)
    counters = Counters.of(row)
    s3 = s3 or aws.client("s3")
    sender = EnqueueSender(sqs or aws.client("sqs"), request) if request.mode == "enqueue" else None
    limiter = limiter or RateLimiter(request.rate)
    chunk_size = chunk_size_for(request.rate)
    try:
        for page in list_pages(s3, request.bucket, request.prefix, row.resume_after, page_size):
            counters.pages += 1
            for start in range(0, max(len(page), 1), chunk_size):
                chunk = page[start : start + chunk_size]
                if not _process_chunk(row, request, chunk, counters, sender, limiter):
                    return _finish(row, counters, Backfill.State.CANCELLED)
                if progress is not None:
                    progress(counters)
    except KeyboardInterrupt:
        _finish(row, counters, Backfill.State.INTERRUPTED)
        raise
    except Exception as exc:
        counters.error(f"{type(exc).__name__}: {exc}")
        _finish(row, counters, Backfill.State.FAILED)
        raise
    return _finish(row, counters, Backfill.State.COMPLETED)


def _process_chunk(
    row: Backfill,
    request: BackfillRequest,
    chunk: Sequence[S3Object],
    counters: Counters,
    sender: EnqueueSender | None,
    limiter: RateLimiter,
) -> bool:
    """Route, dispatch and commit one chunk; False (nothing done) once the row is cancelled."""
    delta = Counters(listed=len(chunk))
    items = routed_items(row.pk, request, chunk, delta)
    limiter.wait(len(items))
    inline = request.mode == Backfill.Mode.INLINE
    resume_after = chunk[-1]["Key"] if chunk else row.resume_after
    merged = copy.deepcopy(counters)
    with transaction.atomic() if inline else nullcontext():
        # Inline, the lock makes the chunk's runs and its progress one commit: an admin
        # cancelling waits for it, and a crash keeps neither.
        rows = Backfill.objects.filter(pk=row.pk)
        state = (rows.select_for_update() if inline else rows).values_list("state", flat=True)
        if state.first() == Backfill.State.CANCELLED:
            return False
        if items and sender is not None:
            _count_sent(items, sender.send(items), delta)
        elif items:
            _count_dispatched(items, dispatch_batch(items, mode=request.mode), delta)
        merged.add(delta)
        _save(row, merged, resume_after=resume_after)
    # committed: only now do the counters in memory move (what `_finish` writes)
    row.resume_after = resume_after
    counters.__dict__.update(merged.__dict__)
    return True


def routed_items(
    backfill_id: int | None,
    request: BackfillRequest,
    chunk: Sequence[S3Object],
    counters: Counters,
) -> list[BatchItem]:
    """The chunk's objects that pass the filters and have a handler, as dispatch items."""
    items = []
    for obj in chunk:
        if not request.wants(obj):
            continue
        event = backfill_event(
            request.bucket,
            obj,
            region=request.region or get_settings().REGION,
            backfill_id=backfill_id,
            handlers=request.handlers,
        )
        routes = route(event)
        if not routes:
            continue
        counters.matched += 1
        for r in routes:
            counters.count(r.handler_name, "matched")
        items.append(BatchItem(event, routes, queue_name=f"backfill:{backfill_id}"))
    return items


def _count_dispatched(
    items: Sequence[BatchItem], outcomes: Sequence[DispatchOutcome], counters: Counters
) -> None:
    for item, outcome in zip(items, outcomes, strict=True):
        for run in outcome.runs:
            if run.skipped:  # done before (even failed for good): a delivery never reruns it
                counters.count(run.handler_name, "skipped")
            elif run.error:
                counters.count(run.handler_name, "failed")
                counters.error(f"{run.handler_name} on {item.event.key!r}: {run.error}")
            else:
                counters.count(run.handler_name, "dispatched")


def _count_sent(items: Sequence[BatchItem], errors: Sequence[str], counters: Counters) -> None:
    for item, error in zip(items, errors, strict=True):
        what = "failed" if error else "dispatched"
        for r in item.routes or ():
            counters.count(r.handler_name, what)
        if error:
            counters.error(f"{item.event.key!r}: {error}")


def _save(row: Backfill, counters: Counters, **fields: Any) -> None:
    row.updated_at = timezone.now()
    Backfill.objects.filter(pk=row.pk).update(
        **counters.row_fields(), updated_at=row.updated_at, **fields
    )


def _finish(row: Backfill, counters: Counters, state: str) -> BackfillResult:
    """Record how the backfill ended (its own transaction: the chunk's may be rolled back)."""
    row.state = state
    row.finished_at = timezone.now()
    for name, value in counters.row_fields().items():
        setattr(row, name, value)
    fields = {"state": state, "finished_at": row.finished_at}
    if state == Backfill.State.CANCELLED:
        fields.pop("state")  # it already says so
    _save(row, counters, **fields)
    logger.info(
        "s3tasks backfill %s %s: %d listed, %d matched, %d dispatched, %d skipped, %d failed",
        row.pk,
        state,
        counters.listed,
        counters.matched,
        counters.dispatched,
        counters.skipped,
        counters.failed,
    )
    return BackfillResult(row, counters)


# --- dry run --------------------------------------------------------------------------------


def dry_run(
    request: BackfillRequest,
    *,
    s3: Any = None,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> Counters:
    """How many objects match which handler; nothing is recorded or run."""
    s3 = s3 or aws.client("s3")
    counters = Counters()
    for page in list_pages(s3, request.bucket, request.prefix, "", page_size):
        counters.pages += 1
        counters.listed += len(page)
        routed_items(None, request, page, counters)
        if progress is not None:
            progress(counters)
    return counters
