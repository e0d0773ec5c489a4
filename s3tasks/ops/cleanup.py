"""Pruning history: events, ended runs, message failures and sent follow-ups older than the
retention (`S3TASKS["HISTORY_RETENTION"]`), deleted in short batches.

Never deleted, whatever their age: a run that has not ended (pending, running, retrying) and
the event it belongs to (recovery and redelivery still need them), and a follow-up not yet
sent. An event goes only once none of its runs is left, so runs are deleted before events.
An event's row is also what makes a redelivered message a duplicate: the retention must
outlast the longest time SQS may still deliver it (`retention_floor`, system check E006).

Each table is walked oldest first through its timestamp index, in windows of `batch_size`
rows; each window is one transaction: one SELECT of the window's keys, then one DELETE of the
due rows in that (age, primary key) range. The rows a batch locks are old rows no worker
touches, and nothing is held longer than one batch, never for the whole pass. On
PostgreSQL every batch first takes a transaction-level advisory lock (`LOCK_KEY`); a pass that
finds it held stops, so of several workers with the cleanup timer one cleans at a time.

Called by `manage.py s3tasks_cleanup` and by each `sqs_worker`'s cleanup timer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args

from django.db import DatabaseError, connections, router, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from s3tasks.models import EventRecord, HandlerRun, MessageFailure, OutboxMessage, Queue, RunState

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
# pg_try_advisory_xact_lock's key: the bytes "s3tclean" as a (positive) 64-bit integer.
LOCK_KEY = int.from_bytes(b"s3tclean", "big")
ENDED = (RunState.SUCCEEDED, RunState.FAILED)
Table = Literal["HandlerRun", "EventRecord", "MessageFailure", "OutboxMessage"]
TABLES: tuple[Table, ...] = get_args(Table)  # in deletion order: runs before their events


@dataclass
class CleanupReport:
    """What one cleanup pass deleted (or, dry, would delete), per table."""

    cutoff: datetime
    dry_run: bool = False
    counts: dict[Table, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    batches: int = 0
    longest_batch: float = 0.0  # seconds of the slowest batch transaction
    seconds: float = 0.0
    complete: bool = True  # False: stopped before the end (time budget, lock held, error)
    busy: bool = False  # another process held the cleanup lock
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class RetentionFloor:
    """The queue SQS keeps messages longest in: history must be kept at least that long."""

    queue_name: str
    seconds: int

    @property
    def retention(self) -> timedelta:
        return timedelta(seconds=self.seconds)


def retention_floor() -> RetentionFloor | None:
    """The longest message retention of the consumed queues (enabled `Queue` rows) and of
    their dead-letter queues, whose messages can be redriven; None when there is no queue."""
    consumed = list(Queue.objects.filter(enabled=True).select_related("dead_letter_queue"))
    queues = consumed + [q.dead_letter_queue for q in consumed if q.dead_letter_queue]
    if not queues:
        return None
    longest = max(queues, key=lambda q: (q.message_retention_seconds, q.name))
    return RetentionFloor(longest.name, longest.message_retention_seconds)


def describe_age(age: timedelta) -> str:
    """`age` for people: "30 days", "36 h", "90 min", "45 s"."""
    seconds = int(age.total_seconds())
    for unit, one, many in ((86400, "day", "days"), (3600, "h", "h"), (60, "min", "min")):
        if seconds >= unit and seconds % unit == 0:
            count = seconds // unit
            return f"{count} {one if count == 1 else many}"
    return f"{seconds} s"


# --- what is due -------------------------------------------------------------------------------


def due_runs(cutoff: datetime) -> QuerySet[HandlerRun]:
    return HandlerRun.objects.filter(state__in=ENDED, created_at__lt=cutoff)


def due_events(cutoff: datetime) -> QuerySet[EventRecord]:
    """Old events none of whose runs would survive this cleanup."""
    staying = HandlerRun.objects.filter(event=OuterRef("pk")).exclude(
        state__in=ENDED, created_at__lt=cutoff
    )
    return EventRecord.objects.filter(received_at__lt=cutoff).exclude(Exists(staying))


def due_failures(cutoff: datetime) -> QuerySet[MessageFailure]:
    return MessageFailure.objects.filter(last_seen_at__lt=cutoff)


def due_outbox(cutoff: datetime) -> QuerySet[OutboxMessage]:
    return OutboxMessage.objects.filter(sent_at__isnull=False, created_at__lt=cutoff)


def count_due(cutoff: datetime) -> dict[Table, int]:
    """How many rows of each table a cleanup at `cutoff` would delete (what --dry-run shows)."""
    return {
        "HandlerRun": due_runs(cutoff).count(),
        "EventRecord": due_events(cutoff).count(),
        "MessageFailure": due_failures(cutoff).count(),
        "OutboxMessage": due_outbox(cutoff).count(),
    }


# --- walking a table in windows -----------------------------------------------------------------

Key = tuple[datetime, int]  # (age, pk): a row's place in the walk, oldest first


def _after(age: str, key: Key | None) -> Q:
    """Rows past `key` in (age, pk) order; the plain `age >= …` is the index range."""
    if key is None:
        return Q()
    tie = Q(**{age: key[0]}, pk__gt=key[1])
    return Q(**{f"{age}__gte": key[0]}) & (Q(**{f"{age}__gt": key[0]}) | tie)


def _up_to(age: str, key: Key) -> Q:
    """Rows up to and including `key` in (age, pk) order."""
    tie = Q(**{age: key[0]}, pk__lte=key[1])
    return Q(**{f"{age}__lte": key[0]}) & (Q(**{f"{age}__lt": key[0]}) | tie)


def _window(rows: QuerySet, age: str, after: Key | None, limit: int) -> list[Key]:
    """The keys of the next `limit` rows past `after`, read through the `age` index."""
    return list(rows.filter(_after(age, after)).order_by(age, "pk").values_list(age, "pk")[:limit])


def _delete_due(due: QuerySet, age: str, after: Key | None, end: Key) -> int:
    """Delete the rows of `due` in the window (after, end]: one DELETE (no cascade applies).

    `due`'s conditions are part of the DELETE, so PostgreSQL re-checks them on a row changed
    meanwhile (a failed run retried from the admin is no longer ended, and stays)."""
    _, per_model = due.filter(_after(age, after), _up_to(age, end)).delete()
    return per_model.get(due.model._meta.label, 0)


def _delete_events(cutoff: datetime, after: Key | None, end: Key) -> int:
    """Delete the events of the window (after, end] that have no run left.

    Plain SQL, not `QuerySet.delete()`: Django would emulate the runs' ON DELETE CASCADE with
    a DELETE of the events' runs, which could take a run that a redelivery of an old event
    committed a moment earlier. Here no run is ever deleted with an event: when a redelivery
    adds a run meanwhile, the database's own (deferred) foreign key fails whichever of the
    two transactions commits second: this batch (rolled back; the next pass tries again) or
    the worker's (its message is retried and records the event again).
    """
    connection = connections[router.db_for_write(EventRecord)]
    quote, value = connection.ops.quote_name, connection.ops.adapt_datetimefield_value
    events, runs = EventRecord._meta, HandlerRun._meta
    table, pk = quote(events.db_table), quote(events.pk.column)
    age = quote(events.get_field("received_at").column)
    run_table, run_event = quote(runs.db_table), quote(runs.get_field("event").column)
    # the same window as `_after` and `_up_to` give the other tables
    where = [f"{age} < %s", f"{age} <= %s", f"({age} < %s OR ({age} = %s AND {pk} <= %s))"]
    params: list[object] = [value(cutoff)] + [value(end[0])] * 3 + [end[1]]
    if after is not None:
        where += [f"{age} >= %s", f"({age} > %s OR ({age} = %s AND {pk} > %s))"]
        params += [value(after[0])] * 3 + [after[1]]
    where.append(f"NOT EXISTS (SELECT 1 FROM {run_table} r WHERE r.{run_event} = {table}.{pk})")
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE {' AND '.join(where)}", params)
        return cursor.rowcount


@dataclass(frozen=True)
class HistoryTable:
    """How a cleanup walks one table: the rows it visits oldest first, by their `age` field
    (an indexed timestamp), and how it deletes the due ones among a window of them."""

    name: Table
    age: str
    visit: Callable[[datetime], QuerySet]
    delete: Callable[[datetime, Key | None, Key], int]


HISTORY: tuple[HistoryTable, ...] = (  # in deletion order: runs before their events
    HistoryTable(
        "HandlerRun",
        "created_at",
        due_runs,
        lambda cutoff, after, end: _delete_due(due_runs(cutoff), "created_at", after, end),
    ),
    HistoryTable(
        "EventRecord",
        "received_at",
        lambda cutoff: EventRecord.objects.filter(received_at__lt=cutoff),
        _delete_events,
    ),
    HistoryTable(
        "MessageFailure",
        "last_seen_at",
        due_failures,
        lambda cutoff, after, end: _delete_due(due_failures(cutoff), "last_seen_at", after, end),
    ),
    HistoryTable(
        "OutboxMessage",
        "created_at",
        due_outbox,
        lambda cutoff, after, end: _delete_due(due_outbox(cutoff), "created_at", after, end),
    ),
)


def _take_lock(alias: str) -> bool:
    """On PostgreSQL, this transaction's hold on the cleanup lock (False: someone has it)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return True  # SQLite serialises writers anyway; other databases: no coordination
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return bool(cursor.fetchone()[0])


# --- the pass ----------------------------------------------------------------------------------


def cleanup_history(
    older_than: timedelta,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    max_seconds: float | None = None,
    now: datetime | None = None,
    on_batch: Callable[[CleanupReport], None] | None = None,
) -> CleanupReport:
    """Delete history older than `older_than`, table by table (runs before events), in
    windows of `batch_size` rows, one transaction each, until every table is walked or
    `max_seconds` have passed; `dry_run` only counts. `on_batch` follows each batch.

    Each window starts where the last one ended (by age, then primary key), so a batch reads
    only its own rows: no rescan of rows kept (runs that have not ended) or just deleted.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    began = time.monotonic()
    report = CleanupReport(cutoff=(now or timezone.now()) - older_than, dry_run=dry_run)
    if dry_run:
        report.counts = count_due(report.cutoff)
    else:
        deadline = None if max_seconds is None else began + max_seconds
        report.complete = _walk(report, batch_size, deadline, on_batch)
    report.seconds = time.monotonic() - began
    _log(report)
    return report


def _walk(
    report: CleanupReport,
    batch_size: int,
    deadline: float | None,
    on_batch: Callable[[CleanupReport], None] | None,
) -> bool:
    """Every table's windows in turn; False when stopped before the end."""
    alias = router.db_for_write(HandlerRun)
    for table in HISTORY:
        after: Key | None = None
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            window = _run_batch(report, table, after, batch_size, alias)
            if window is None:  # the lock is held elsewhere, or the database failed
                return False
            if on_batch is not None and window:
                on_batch(report)
            if len(window) < batch_size:
                break
            after = window[-1]
    return True


def _run_batch(
    report: CleanupReport, table: HistoryTable, after: Key | None, limit: int, alias: str
) -> list[Key] | None:
    """Read the next window of `table` and delete its due rows, in one transaction; return
    the window, or None when the pass must stop."""
    began = time.monotonic()
    try:
        with transaction.atomic(using=alias):
            if not _take_lock(alias):  # another process is cleaning up: leave it to that one
                report.busy = True
                return None
            window = _window(table.visit(report.cutoff), table.age, after, limit)
            deleted = table.delete(report.cutoff, after, window[-1]) if window else 0
    except DatabaseError as exc:  # e.g. a run created for an event being deleted
        logger.warning("s3tasks cleanup: a batch of %s failed (%s); stopping", table.name, exc)
        report.errors.append(f"{table.name}: {type(exc).__name__}: {exc}")
        return None
    if window:
        report.batches += 1
        report.counts[table.name] += deleted
        report.longest_batch = max(report.longest_batch, time.monotonic() - began)
    return window


def _log(report: CleanupReport) -> None:
    if report.dry_run:
        return
    if report.busy:
        logger.info("s3tasks cleanup: another process holds the cleanup lock; stopped")
    if report.total:
        logger.info(
            "s3tasks cleanup: deleted %s (older than %s) in %d batch(es), %.1fs%s",
            ", ".join(f"{n} {table}" for table, n in report.counts.items() if n),
            report.cutoff.isoformat(timespec="seconds"),
            report.batches,
            report.seconds,
            "" if report.complete else "; more next pass",
        )
