"""Dispatch: record an event, then run its handlers inline or hand them to Celery.

`dispatch_event` is what the batch core (worker and Lambda) calls for every event. It records
the `EventRecord` and one `HandlerRun` per route idempotently, then

- `inline`: runs each handler now, exactly once per (dedup key, handler), see `execution`;
- `celery`: sends each handler's registered Celery task (JSON arguments) once and stores the
  task id; the task body (`execute_celery_run`) claims the run the same exactly-once way and
  retries with exponential backoff.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from s3tasks import signals
from s3tasks.conf import get_settings
from s3tasks.events import S3Event
from s3tasks.exceptions import UnknownHandler
from s3tasks.execution import (
    Attempt,
    attempt_run,
    fail_without_running,
    is_permanent,
    retry_limit,
)
from s3tasks.models import HandlerRun, RunState
from s3tasks.records import ensure_run, record_event
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


def dispatch_event(
    event: S3Event,
    *,
    routes: list[Route] | None = None,
    mode: str | None = None,
    message_id: str = "",
    queue_name: str = "",
) -> DispatchOutcome:
    """Record `event` and run (inline) or send (celery) every routed handler exactly once."""
    mode = mode or get_settings().DISPATCH
    if mode not in (INLINE, CELERY):
        raise ValueError(f"dispatch mode must be 'inline' or 'celery', not {mode!r}.")
    if routes is None:
        routes = route(event)
    with transaction.atomic():  # one commit for all the bookkeeping rows
        record, created = record_event(event, message_id=message_id, queue_name=queue_name)
        runs = [ensure_run(record, r.handler_name, r.celery_queue) for r in routes]
    if created:
        signals.event_received.send(
            sender="s3tasks", event=event, record=record, message_id=message_id
        )
    outcomes = tuple(
        _dispatch_route(run, event, r, mode) for run, r in zip(runs, routes, strict=True)
    )
    failed = [o for o in outcomes if not o.ok]
    return DispatchOutcome(
        event_id=record.pk,
        runs=outcomes,
        ok=not failed,
        permanent=bool(failed) and all(o.permanent for o in failed),
        error="; ".join(f"{o.handler_name}: {o.error}" for o in failed),
    )


def _dispatch_route(run: HandlerRun, event: S3Event, chosen: Route, mode: str) -> RunOutcome:
    if run.state == RunState.SUCCEEDED:
        return _skipped(run)
    try:
        handler = registry.get(chosen.handler_name)
    except UnknownHandler as exc:
        return _outcome(fail_without_running(run.pk, event, exc))
    if mode == INLINE:
        return run_inline(run.pk, handler, event)
    if run.celery_task_id:  # already handed to the broker by an earlier delivery
        return _skipped(run)
    return send_to_celery(run.pk, handler, event, chosen.celery_queue)


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


def run_inline(run_id: int, handler: Handler, event: S3Event) -> RunOutcome:
    """Run the handler in this process; a failure is left for redelivery (or is permanent)."""
    limit = retry_limit(handler)

    def policy(run: HandlerRun, exc: BaseException) -> tuple[str, bool]:
        # No in-process retry: the message comes back (SQS) and that is the retry.
        return RunState.FAILED, is_permanent(exc) or run.attempts > limit

    return _outcome(attempt_run(run_id, handler, event, policy))


# --- celery -------------------------------------------------------------------------------


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
