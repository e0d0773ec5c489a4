"""Dispatch: record events, then run their handlers inline or hand them to Celery.

`dispatch_batch` is what the batch core (worker and Lambda) calls for every received batch;
`dispatch_event` is a batch of one. The bookkeeping is done per batch: one INSERT for the
batch's `EventRecord`s and one for its `HandlerRun`s (idempotent, see `records`), then

- `inline`: in ONE transaction, the runs that already existed are locked, every handler runs
  in its own savepoint, exactly once per (dedup key, handler), and all outcomes are written
  with one UPDATE. A process killed mid-batch commits nothing; the redelivery runs it again.
- `celery`: sends each handler's registered Celery task (JSON arguments) once and stores the
  task id; the task body (`execute_celery_run`) claims the run the same exactly-once way and
  retries with exponential backoff.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db import connection, transaction

from s3tasks import signals
from s3tasks.conf import get_settings
from s3tasks.events import S3Event
from s3tasks.exceptions import UnknownHandler
from s3tasks.execution import (
    OUTCOME_FIELDS,
    Attempt,
    attempt_run,
    fail_without_running,
    inline_policy,
    is_permanent,
    mark_unrunnable,
    report,
    retry_limit,
    run_claimed,
)
from s3tasks.models import EventRecord, HandlerRun, RunState
from s3tasks.records import (
    RunKey,
    ensure_run,
    ensure_runs,
    record_event,
    record_events,
    update_rows,
)
from s3tasks.registry import Handler, registry
from s3tasks.routing import Route, route

logger = logging.getLogger(__name__)

INLINE = "inline"
CELERY = "celery"


@dataclass(frozen=True)
class RunOutcome:
    """What dispatch did with one handler: `skipped` = already done or already handed off."""

    handler_name: str
    run_id: int | None
    state: str
    skipped: bool = False
    error: str = ""
    permanent: bool = False

    @property
    def ok(self) -> bool:
        """Succeeded, skipped as done/in flight, or durably handed to Celery."""
        return not self.error


@dataclass(frozen=True)
class DispatchOutcome:
    """What dispatch did with one event; `ok` means the message may be deleted."""

    event_id: int | None
    runs: tuple[RunOutcome, ...]
    ok: bool
    permanent: bool = False
    error: str = ""


@dataclass(frozen=True)
class BatchItem:
    """One event to dispatch, where it came from, and its routes (None: `route(event)`)."""

    event: S3Event
    routes: Sequence[Route] | None = None
    message_id: str = ""
    queue_name: str = ""


@dataclass(frozen=True)
class _Planned:
    """A batch item with its routes resolved and its rows looked up."""

    item: BatchItem
    routes: Sequence[Route]
    event_id: int
    record: EventRecord | None  # set on the first item of an event this batch recorded

    def run_keys(self) -> list[RunKey]:
        return [(self.event_id, r.handler_name) for r in self.routes]


def dispatch_event(
    event: S3Event,
    *,
    routes: Sequence[Route] | None = None,
    mode: str | None = None,
    message_id: str = "",
    queue_name: str = "",
) -> DispatchOutcome:
    """Record `event` and run (inline) or send (celery) every routed handler exactly once."""
    [outcome] = dispatch_batch([BatchItem(event, routes, message_id, queue_name)], mode=mode)
    return outcome


def dispatch_batch(items: Sequence[BatchItem], *, mode: str | None = None) -> list[DispatchOutcome]:
    """Dispatch every item exactly as `dispatch_event` would, one after the other, with the
    bookkeeping done once per batch; returns one outcome per item, in order.

    A handler failure fails only its own item. A database error (or a handler raising a
    `BaseException`) propagates, and in inline mode nothing of the batch is kept.
    """
    mode = mode or get_settings().DISPATCH
    if mode not in (INLINE, CELERY):
        raise ValueError(f"dispatch mode must be 'inline' or 'celery', not {mode!r}.")
    if not items:
        return []
    if mode == INLINE:
        return _dispatch_inline(items)
    return _dispatch_celery(items)


def _plan(
    items: Sequence[BatchItem], *, lock: bool
) -> tuple[list[_Planned], dict[RunKey, HandlerRun]]:
    """Write the event and run rows of a batch; with `lock`, lock the runs that existed."""
    routes = [list(i.routes) if i.routes is not None else route(i.event) for i in items]
    recorded = record_events((i.event, i.message_id, i.queue_name) for i in items)
    planned = []
    for item, item_routes in zip(items, routes, strict=True):
        key = item.event.dedup_key
        record = recorded.created.pop(key, None)  # pop: only the first item announces it
        planned.append(_Planned(item, item_routes, recorded.ids[key], record))
    wanted = {(p.event_id, r.handler_name): r.celery_queue for p in planned for r in p.routes}
    return planned, ensure_runs(wanted, lock=lock)


def _announce(planned: _Planned) -> None:
    if planned.record is not None:
        signals.event_received.send(
            sender="s3tasks",
            event=planned.item.event,
            record=planned.record,
            message_id=planned.item.message_id,
        )


def _event_outcome(event_id: int, outcomes: tuple[RunOutcome, ...]) -> DispatchOutcome:
    failed = [o for o in outcomes if not o.ok]
    return DispatchOutcome(
        event_id=event_id,
        runs=outcomes,
        ok=not failed,
        permanent=bool(failed) and all(o.permanent for o in failed),
        error="; ".join(f"{o.handler_name}: {o.error}" for o in failed),
    )


def _skipped(run: HandlerRun) -> RunOutcome:
    return RunOutcome(run.handler_name, run.pk, run.state, skipped=True)


def _outcome(attempt: Attempt) -> RunOutcome:
    run = attempt.run
    if attempt.skipped:
        return _skipped(run)
    return RunOutcome(
        run.handler_name,
        run.pk,
        run.state,
        error=run.error if attempt.exception is not None else "",
        permanent=attempt.permanent,
    )


# --- inline -------------------------------------------------------------------------------


def _dispatch_inline(items: Sequence[BatchItem]) -> list[DispatchOutcome]:
    """The whole batch in one transaction: rows, claims, handlers (savepoints), outcomes."""
    attempts: list[tuple[Attempt, str, S3Event]] = []
    results = []
    with transaction.atomic():
        planned, runs = _plan(items, lock=True)
        claimed: dict[int, HandlerRun] = {}
        for p in planned:
            _announce(p)
            outcomes = []
            for chosen, key in zip(p.routes, p.run_keys(), strict=True):
                run = runs[key]
                attempt = _attempt_inline(run, chosen.handler_name, p.item.event)
                if not attempt.skipped:
                    claimed[run.pk] = run
                    # a snapshot: a duplicate later in the batch may attempt this run again
                    attempt = replace(attempt, run=copy.copy(run))
                    attempts.append((attempt, chosen.handler_name, p.item.event))
                outcomes.append(_outcome(attempt))
            results.append(_event_outcome(p.event_id, tuple(outcomes)))
        if claimed:
            update_rows(list(claimed.values()), OUTCOME_FIELDS)
    for attempt, handler_name, event in attempts:  # signals once the outcomes are committed
        report(attempt, handler_name, event)
    return results


def _attempt_inline(run: HandlerRun, handler_name: str, event: S3Event) -> Attempt:
    if run.state == RunState.SUCCEEDED:
        return Attempt(run=run, skipped=True)
    try:
        handler = registry.get(handler_name)
    except UnknownHandler as exc:
        return mark_unrunnable(run, exc)
    return run_claimed(run, handler, event, inline_policy(handler))


def run_inline(run_id: int, handler: Handler, event: S3Event) -> RunOutcome:
    """Run the handler in this process; a failure is left for redelivery (or is permanent)."""
    return _outcome(attempt_run(run_id, handler, event, inline_policy(handler)))


# --- celery -------------------------------------------------------------------------------


def _dispatch_celery(items: Sequence[BatchItem]) -> list[DispatchOutcome]:
    """Commit the batch's rows, then send each run's task once (after commit, per run)."""
    with transaction.atomic():
        planned, runs = _plan(items, lock=False)
    results = []
    for p in planned:
        _announce(p)
        outcomes = tuple(
            _send_route(runs[key], p.item.event, chosen)
            for chosen, key in zip(p.routes, p.run_keys(), strict=True)
        )
        results.append(_event_outcome(p.event_id, outcomes))
    return results


def _send_route(run: HandlerRun, event: S3Event, chosen: Route) -> RunOutcome:
    if run.state == RunState.SUCCEEDED:
        return _skipped(run)
    try:
        handler = registry.get(chosen.handler_name)
    except UnknownHandler as exc:
        return _outcome(fail_without_running(run.pk, event, exc))
    if run.celery_task_id:  # already handed to the broker by an earlier delivery
        return _skipped(run)
    return send_to_celery(run.pk, handler, event, chosen.celery_queue)


def celery_queue_for(route_queue: str = "") -> str | None:
    """The Celery queue: the binding's, else `S3TASKS["CELERY_QUEUE"]`, else Celery's default."""
    return route_queue or get_settings().CELERY_QUEUE or None


def send_to_celery(
    run_id: int, handler: Handler, event: S3Event, route_queue: str = ""
) -> RunOutcome:
    """Send the handler's task once for this run; defer to commit inside a caller's transaction.

    The run row is locked while sending so concurrent deliveries send one task; the task id is
    stored only once the broker accepted it, so a crash before that means "never sent" and
    the next delivery sends again (the task's exactly-once claim absorbs any duplicate).
    """
    queue = celery_queue_for(route_queue)
    if connection.in_atomic_block:
        # Celery must be able to read our rows: send once the caller's transaction commits.
        transaction.on_commit(lambda: _send_locked(run_id, handler, event, queue), robust=True)
        return RunOutcome(handler.name, run_id, RunState.PENDING)
    return _send_locked(run_id, handler, event, queue)


def _send_locked(run_id: int, handler: Handler, event: S3Event, queue: str | None) -> RunOutcome:
    error = ""
    with transaction.atomic():
        run = HandlerRun.objects.select_for_update().get(pk=run_id)
        if run.state == RunState.SUCCEEDED or run.celery_task_id:
            return _skipped(run)
        task_id = str(uuid.uuid4())
        try:
            handler.task.apply_async(
                args=[event.to_dict(), run.pk], queue=queue, task_id=task_id, serializer="json"
            )
        except Exception as exc:  # broker down: leave the run unsent so a redelivery retries
            logger.exception("s3tasks: could not send %s to Celery", handler.name)
            error = f"could not send the Celery task ({type(exc).__name__}: {exc})"
        else:
            HandlerRun.objects.filter(pk=run.pk).update(
                celery_task_id=task_id, celery_queue=queue or ""
            )
    run.refresh_from_db()
    if error:
        return RunOutcome(handler.name, run.pk, run.state, error=error)
    if run.state == RunState.FAILED:  # eager Celery ran it right here and it failed
        return RunOutcome(
            handler.name, run.pk, run.state, error=run.error or "failed", permanent=True
        )
    return RunOutcome(handler.name, run.pk, run.state)


def execute_celery_run(
    task: Any, handler_name: str, event_data: dict[str, Any], run_id: int | None
) -> Any:
    """The body of every handler's Celery task: exactly-once claim, run, retry with backoff."""
    event = S3Event.from_dict(event_data)
    handler = registry.get(handler_name)
    run = HandlerRun.objects.filter(pk=run_id).first() if run_id is not None else None
    if run is None:  # sent without dispatch (e.g. `task.delay(event.to_dict())`): record it
        record, _ = record_event(event)
        run = ensure_run(record, handler_name)
    limit = retry_limit(handler)
    retries = int(getattr(task.request, "retries", 0) or 0)

    def policy(run: HandlerRun, exc: BaseException) -> tuple[str, bool]:
        if is_permanent(exc) or retries >= limit:
            return RunState.FAILED, True
        return RunState.RETRYING, False

    attempt = attempt_run(run.pk, handler, event, policy)
    if attempt.skipped:
        return {"skipped": True, "state": attempt.run.state}
    if attempt.exception is None:
        return attempt.run.result_summary
    if attempt.permanent:
        raise attempt.exception
    countdown = get_settings().RETRY_BACKOFF * 2**retries
    raise task.retry(exc=attempt.exception, countdown=countdown, max_retries=limit)


# --- admin: retry a failed run ------------------------------------------------------------


def retry_run(run: HandlerRun, *, mode: str | None = None) -> RunOutcome:
    """Re-dispatch a failed run (admin "retry"); a succeeded or in-flight run is left alone."""
    mode = mode or get_settings().DISPATCH
    with transaction.atomic():
        locked = HandlerRun.objects.select_for_update().get(pk=run.pk)
        never_sent = locked.state == RunState.PENDING and not locked.celery_task_id
        if locked.state != RunState.FAILED and not never_sent:
            return _skipped(locked)
        locked.state = RunState.PENDING
        locked.celery_task_id = ""
        locked.save(update_fields=["state", "celery_task_id"])
    event = locked.event.to_event()
    try:
        handler = registry.get(locked.handler_name)
    except UnknownHandler as exc:
        return _outcome(fail_without_running(locked.pk, event, exc))
    if mode == INLINE:
        return run_inline(locked.pk, handler, event)
    return send_to_celery(locked.pk, handler, event, locked.celery_queue)
