"""Run one handler on one event exactly once, whoever calls (inline dispatch or a Celery task).

`run_claimed` is the attempt itself, on a run the caller has locked: batched inline dispatch
locks a batch's runs at once and writes all outcomes in one UPDATE; `attempt_run` (Celery tasks,
admin retries) locks one run, calls it and saves. The run row is locked (`select_for_update` in
`transaction.atomic`; SQLite serialises writers) for the whole attempt, so a racing worker waits
and then sees `succeeded`. The handler's own
writes, the outbox rows of its follow-up commands and the `succeeded` state commit together:
a process killed mid-handler rolls all of it back and a redelivery runs it again cleanly. A
failing handler's writes roll back to a savepoint; the failure itself is recorded, as
`retrying` or, once the handler gives up, `failed` for good.

`execute_celery_run` is the body of every handler's Celery task: the same claim, retries of
handler failures counted in the run's attempts, and retries of an unreachable database or
broker that count as nothing.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from s3tasks import signals
from s3tasks.conf import get_settings
from s3tasks.events import S3Event
from s3tasks.exceptions import HandlerFailure, SwallowedDatabaseError, UndeclaredDatabaseUse
from s3tasks.followups.commands import is_command_list, submit_all
from s3tasks.models import HandlerRun, RunState
from s3tasks.outages import describe, is_unavailable
from s3tasks.processing.runs import ensure_run, record_event
from s3tasks.rules.registry import Handler, registry
from s3tasks.text import ERROR_LIMIT, SUMMARY_LIMIT, truncate

logger = logging.getLogger(__name__)

# (run after the failed attempt, the exception) -> (state to record, permanent?)
FailurePolicy = Callable[[HandlerRun, BaseException], tuple[str, bool]]

# What an attempt changes on its run: saved with `update_fields`, or in one bulk UPDATE.
OUTCOME_FIELDS = [
    "state",
    "attempts",
    "started_at",
    "finished_at",
    "duration_ms",
    "error",
    "traceback",
    "result_summary",
    "lease_expires_at",
]

# A run in one of these states is never run again by a delivery (only by an explicit retry).
TERMINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED})


@dataclass(frozen=True)
class Attempt:
    """What one call of `attempt_run` did."""

    run: HandlerRun
    skipped: bool = False
    result: Any = None
    exception: BaseException | None = None
    permanent: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exception is None


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help (`PermanentFailure` / `HandlerFailure(permanent=True)`)."""
    return isinstance(exc, HandlerFailure) and exc.permanent


def retry_limit(handler: Handler | None) -> int:
    """How many retries a handler gets: its own `max_retries`, else `S3TASKS["MAX_RETRIES"]`."""
    if handler is not None and handler.max_retries is not None:
        return handler.max_retries
    return get_settings().MAX_RETRIES


def summarize(result: Any) -> str:
    """A short text for `HandlerRun.result_summary`; follow-up commands are submitted here."""

    if result is None:
        return ""
    if is_command_list(result):
        submit_all(result)
        return f"{len(result)} follow-up command(s)"
    if isinstance(result, str):
        return truncate(result, SUMMARY_LIMIT)
    try:
        text = json.dumps(result, default=str, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(result)
    return truncate(text, SUMMARY_LIMIT)


def gives_up(handler: Handler | None, run: HandlerRun, exc: BaseException) -> bool:
    """Whether this failure ends the run for good: `PermanentFailure`, or no retry left."""
    return is_permanent(exc) or run.attempts > retry_limit(handler)


def inline_policy(handler: Handler) -> FailurePolicy:
    """Inline dispatch has no in-process retry: the redelivered message is the retry. The run
    is `retrying` until it gives up, then `failed` for good (deliveries skip it)."""

    def policy(run: HandlerRun, exc: BaseException) -> tuple[str, bool]:
        if gives_up(handler, run, exc):
            return RunState.FAILED, True
        return RunState.RETRYING, False

    return policy


def run_claimed(
    run: HandlerRun, handler: Handler, event: S3Event, on_failure: FailurePolicy
) -> Attempt:
    """Run `handler` on a run the caller has claimed (locked, not succeeded, in a transaction).

    Counts the attempt, sends `run_started`, runs the handler in a savepoint (a failure rolls
    back its writes alone) and sets the outcome on `run`; the caller saves `OUTCOME_FIELDS`.
    """
    run.attempts += 1
    run.state = RunState.RUNNING
    run.started_at = timezone.now()
    signals.run_started.send(sender=handler.name, run=run, event=event)
    began = time.perf_counter()
    try:
        result, summary = call_handler(handler, event)
    except Exception as exc:
        _finish(run, began)
        run.lease_expires_at = None  # the policy sets a new one when the run is handed off again
        state, permanent = on_failure(run, exc)
        run.state = state
        run.error = truncate(f"{type(exc).__name__}: {exc}", ERROR_LIMIT)
        run.traceback = "".join(traceback.format_exception(exc))
        return Attempt(run=run, exception=exc, permanent=permanent)
    _finish(run, began)
    run.state = RunState.SUCCEEDED
    run.lease_expires_at = None
    run.error = run.traceback = ""
    run.result_summary = summary
    return Attempt(run=run, result=result)


def call_handler(handler: Handler, event: S3Event) -> tuple[Any, str]:
    """Run `handler` and submit its follow-up commands in a savepoint of their own (`atomic()`),
    so a failure undoes exactly this handler's writes and follow-ups; returns (result, summary).

    A handler declared `uses_database=False` runs without one (two statements fewer); any SQL
    it sends raises `UndeclaredDatabaseUse` before reaching the database, so nothing it did
    needs undoing. Follow-up commands it returns still get a savepoint.
    """
    if not handler.uses_database:
        result = _call_without_database(handler, event)
        if not is_command_list(result):
            return result, summarize(result)
        with transaction.atomic():
            return result, summarize(result)
    with transaction.atomic():
        result = handler.func(event)
        if transaction.get_rollback():  # it caught a database error: its writes are lost
            raise SwallowedDatabaseError(
                f"handler {handler.name!r} caught a database error inside its transaction, so "
                "its writes were rolled back; let the error propagate, or wrap the failing "
                "statement in its own transaction.atomic() block."
            )
        return result, summarize(result)


def _call_without_database(handler: Handler, event: S3Event) -> Any:
    connection = transaction.get_connection()
    refuse = _RefuseSQL(handler.name)
    try:
        with connection.execute_wrapper(refuse):
            result = handler.func(event)
    finally:
        if refuse.refused and connection.in_atomic_block:
            # Django marked the transaction for rollback, but nothing reached the database
            transaction.set_rollback(False)
    if refuse.refused:  # even if the handler caught it
        raise UndeclaredDatabaseUse(refuse.message)
    return result


class _RefuseSQL:
    """An execute wrapper that stops any statement of a handler that declared it sends none."""

    def __init__(self, handler_name: str) -> None:
        self.handler_name = handler_name
        self.message = ""

    @property
    def refused(self) -> bool:
        return bool(self.message)

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.message = (
            f"handler {self.handler_name!r} is declared with uses_database=False but sent SQL "
            f"({sql[:80]!r}); remove uses_database=False from its decorator."
        )
        raise UndeclaredDatabaseUse(self.message)


def attempt_run(
    run_id: int, handler: Handler, event: S3Event, on_failure: FailurePolicy
) -> Attempt:
    """Claim run `run_id` under a lock and run `handler` unless the run already ended."""
    with transaction.atomic():
        run = HandlerRun.objects.select_for_update().get(pk=run_id)
        if run.state in TERMINAL_STATES:
            return Attempt(run=run, skipped=True)
        attempt = run_claimed(run, handler, event, on_failure)
        run.save(update_fields=OUTCOME_FIELDS)
    report(attempt, handler.name, event)
    return attempt


def _finish(run: HandlerRun, began: float) -> None:
    run.finished_at = timezone.now()
    run.duration_ms = round((time.perf_counter() - began) * 1000, 3)


def report(attempt: Attempt, handler_name: str, event: S3Event) -> None:
    """Send the lifecycle signal and log, after the attempt's transaction committed."""
    run = attempt.run
    if attempt.skipped:
        return
    if attempt.exception is None:
        logger.debug(
            "s3tasks: %s succeeded on %s in %.1f ms", handler_name, event.key, run.duration_ms or 0
        )
        signals.run_succeeded.send(sender=handler_name, run=run, event=event, result=attempt.result)
        return
    level = logging.ERROR if attempt.permanent else logging.WARNING
    logger.log(
        level,
        "s3tasks: %s failed %s on s3://%s/%s (run %s, attempt %d, %s): %s",
        handler_name,
        "permanently" if attempt.permanent else "(will be retried)",
        event.bucket,
        event.key,
        run.pk,
        run.attempts,
        run.state,
        run.error,
    )
    signals.run_failed.send(
        sender=handler_name,
        run=run,
        event=event,
        exception=attempt.exception,
        permanent=attempt.permanent,
    )


# --- the body of every handler's Celery task -----------------------------------------------


def lease_deadline(delay: float = 0) -> datetime:
    """When a run handed off now (to start after `delay` seconds) counts as stuck."""
    return timezone.now() + timedelta(seconds=delay + get_settings().RUN_LEASE)


def execute_celery_run(
    task: Any, handler_name: str, event_data: dict[str, Any], run_id: int | None
) -> Any:
    """The body of every handler's Celery task: exactly-once claim, run, retry with backoff.

    A handler failure is retried until the run's attempts pass the handler's `max_retries`; an
    unreachable database or broker is retried with backoff without counting as an attempt.
    """
    event = S3Event.from_dict(event_data)
    handler = registry.get(handler_name)
    try:
        attempt = _celery_attempt(handler, event, run_id)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        retries = int(getattr(task.request, "retries", 0) or 0)
        countdown = min(MAX_OUTAGE_BACKOFF, get_settings().RETRY_BACKOFF * 2 ** min(retries, 10))
        logger.warning(
            "s3tasks: %s on s3://%s/%s could not reach the database (%s); trying again in %ss",
            handler_name,
            event.bucket,
            event.key,
            describe(exc),
            countdown,
        )
        raise task.retry(exc=exc, countdown=countdown)
    if attempt.skipped:
        return {"skipped": True, "state": attempt.run.state}
    if attempt.exception is None:
        return attempt.run.result_summary
    if attempt.permanent:
        raise attempt.exception
    raise task.retry(exc=attempt.exception, countdown=handler_backoff(attempt.run.attempts))


MAX_OUTAGE_BACKOFF = 300  # seconds between a Celery task's tries while the database is down


def handler_backoff(attempts: int) -> int:
    """Seconds before retry number `attempts` of a failed handler: exponential."""
    return get_settings().RETRY_BACKOFF * 2 ** max(0, min(attempts - 1, 16))


def _celery_attempt(handler: Handler, event: S3Event, run_id: int | None) -> Attempt:
    run = HandlerRun.objects.filter(pk=run_id).first() if run_id is not None else None
    if run is None:  # sent without dispatch (e.g. `task.delay(event.to_dict())`): record it
        record, _ = record_event(event)
        run = ensure_run(record, handler.name)

    def policy(run: HandlerRun, exc: BaseException) -> tuple[str, bool]:
        if gives_up(handler, run, exc):
            return RunState.FAILED, True
        run.lease_expires_at = lease_deadline(handler_backoff(run.attempts))
        return RunState.RETRYING, False

    return attempt_run(run.pk, handler, event, policy)
