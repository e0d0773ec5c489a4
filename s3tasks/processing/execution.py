"""Run one handler on one event exactly once, whoever calls (inline dispatch or a Celery task).

`run_claimed` is the attempt itself, on a run the caller has locked: batched inline dispatch
locks a batch's runs at once and writes all outcomes in one UPDATE; `attempt_run` (admin
retries, recovery inline) locks one run, calls it and saves. The run row is locked
(`select_for_update` in `transaction.atomic`; SQLite serialises writers) for the whole
attempt, so a racing worker waits and then sees `succeeded`. The handler's own writes, the
outbox rows of its follow-up commands and the `succeeded` state commit together: a process
killed mid-handler rolls all of it back and a redelivery runs it again cleanly. A failing
handler's writes roll back to a savepoint; the failure itself is recorded, as `retrying` or,
once the handler gives up, `failed` for good.

`attempt_task` is the attempt of a handler's Celery task (`celery_tasks.execute_celery_run`):
the same lock, taken only by the task that owns the run (its `celery_task_id`), in a
transaction of two statements that holds this attempt alone (no savepoint: a failure rolls it
all back, then the failed attempt is recorded).
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
from s3tasks.processing.runs import claim_run, update_rows
from s3tasks.rules.registry import Handler
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

# A Celery task's attempt also records the task as the run's owner.
TASK_OUTCOME_FIELDS = [*OUTCOME_FIELDS, "celery_task_id"]

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
    _count_attempt(run)
    _started(run, handler, event)
    began = time.perf_counter()
    try:
        result, summary = call_handler(handler, event)
    except Exception as exc:
        return _failed(run, began, exc, on_failure)
    return _succeeded(run, began, result, summary)


def _count_attempt(run: HandlerRun) -> None:
    run.attempts += 1
    run.state = RunState.RUNNING
    run.started_at = timezone.now()


def _started(run: HandlerRun, handler: Handler, event: S3Event) -> None:
    signals.run_started.send(sender=handler.name, run=run, event=event)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "s3tasks: %s started on s3://%s/%s (run %s, attempt %d)",
            handler.name,
            event.bucket,
            event.key,
            run.pk,
            run.attempts,
            extra=run_log_fields(run, handler.name, event, finished=False),
        )


def _failed(run: HandlerRun, began: float, exc: Exception, on_failure: FailurePolicy) -> Attempt:
    _finish(run, began)
    run.lease_expires_at = None  # the policy sets a new one when the run is handed off again
    state, permanent = on_failure(run, exc)
    run.state = state
    run.error = truncate(f"{type(exc).__name__}: {exc}", ERROR_LIMIT)
    run.traceback = "".join(traceback.format_exception(exc))
    return Attempt(run=run, exception=exc, permanent=permanent)


def _succeeded(run: HandlerRun, began: float, result: Any, summary: str) -> Attempt:
    _finish(run, began)
    run.state = RunState.SUCCEEDED
    run.lease_expires_at = None
    run.error = run.traceback = ""
    run.result_summary = summary
    return Attempt(run=run, result=result)


def call_handler(handler: Handler, event: S3Event, *, savepoint: bool = True) -> tuple[Any, str]:
    """Run `handler` and submit its follow-up commands in a savepoint of their own (`atomic()`),
    so a failure undoes exactly this handler's writes and follow-ups; returns (result, summary).

    A handler declared `uses_database=False` runs without one (two statements fewer); any SQL
    it sends raises `UndeclaredDatabaseUse` before reaching the database, so nothing it did
    needs undoing. Follow-up commands it returns still get a savepoint. `savepoint=False`
    is for a caller whose transaction holds this attempt alone and is rolled back whole when
    it fails (a Celery task).
    """
    if not handler.uses_database:
        result = _call_without_database(handler, event)
        if not savepoint or not is_command_list(result):
            return result, summarize(result)
        with transaction.atomic():
            return result, summarize(result)
    if not savepoint:
        return _call_with_database(handler, event)
    with transaction.atomic():
        return _call_with_database(handler, event)


def _call_with_database(handler: Handler, event: S3Event) -> tuple[Any, str]:
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


def attempt_task(
    run_id: int, task_id: str, handler: Handler, event: S3Event, on_failure: FailurePolicy
) -> Attempt | None:
    """A Celery task's attempt at run `run_id`, in one transaction of two statements: lock it
    (`runs.claim_run`), run `handler`, save the outcome with the attempt counted and the task
    recorded as the run's owner. None when the run ended or belongs to another task.

    The transaction holds this attempt alone, so the handler needs no savepoint: a failure
    rolls all of it back (the handler's writes, its follow-ups, the claim) and the failed
    attempt is then recorded with one UPDATE — unless another attempt got the run meanwhile.
    """
    failure: Exception | None = None
    try:
        with transaction.atomic():
            run = claim_run(run_id, task_id, TERMINAL_STATES)
            if run is None:
                return None
            _count_attempt(run)
            run.celery_task_id = task_id
            _started(run, handler, event)
            began = time.perf_counter()
            try:
                result, summary = call_handler(handler, event, savepoint=False)
            except Exception as exc:
                failure = exc
                raise
            attempt = _succeeded(run, began, result, summary)
            update_rows([run], TASK_OUTCOME_FIELDS)
    except Exception:
        if failure is None:
            raise
        attempt = _failed(run, began, failure, on_failure)
        if not _save_failed_attempt(run):
            return Attempt(run=HandlerRun.objects.get(pk=run_id), skipped=True)
    report(attempt, handler.name, event)
    return attempt


def _save_failed_attempt(run: HandlerRun) -> bool:
    """Record a failed attempt whose transaction rolled back, unless the run moved on since
    (another attempt counted, it ended, or another task owns it)."""
    values = {name: getattr(run, name) for name in TASK_OUTCOME_FIELDS}
    unchanged = HandlerRun.objects.filter(
        pk=run.pk, attempts=run.attempts - 1, celery_task_id__in=("", run.celery_task_id)
    ).exclude(state__in=TERMINAL_STATES)
    return unchanged.update(**values) == 1


def _finish(run: HandlerRun, began: float) -> None:
    run.finished_at = timezone.now()
    run.duration_ms = round((time.perf_counter() - began) * 1000, 3)


def run_log_fields(
    run: HandlerRun, handler_name: str, event: S3Event, *, finished: bool = True
) -> dict[str, Any]:
    """The `extra=` of a log line about a run (`s3tasks.logs.RUN_FIELDS`; JSON logs show them)."""
    fields: dict[str, Any] = {
        "dedup_key": event.dedup_key,
        "bucket": event.bucket,
        "key": event.key,
        "handler": handler_name,
        "run_id": run.pk,
        "attempt": run.attempts,
    }
    if finished:
        fields.update(duration_ms=run.duration_ms, outcome=run.state)
    return fields


def report(attempt: Attempt, handler_name: str, event: S3Event) -> None:
    """Send the lifecycle signal and log, after the attempt's transaction committed."""
    run = attempt.run
    if attempt.skipped:
        return
    if attempt.exception is None:
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "s3tasks: %s succeeded on s3://%s/%s (run %s, attempt %d) in %.1f ms",
                handler_name,
                event.bucket,
                event.key,
                run.pk,
                run.attempts,
                run.duration_ms or 0,
                extra=run_log_fields(run, handler_name, event),
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
        extra=run_log_fields(run, handler_name, event),
    )
    signals.run_failed.send(
        sender=handler_name,
        run=run,
        event=event,
        exception=attempt.exception,
        permanent=attempt.permanent,
    )


# --- handing off and retrying -------------------------------------------------------------


def lease_deadline(delay: float = 0) -> datetime:
    """When a run handed off now (to start after `delay` seconds) counts as stuck."""
    return timezone.now() + timedelta(seconds=delay + get_settings().RUN_LEASE)


def handler_backoff(attempts: int) -> int:
    """Seconds before retry number `attempts` of a failed handler: exponential."""
    return get_settings().RETRY_BACKOFF * 2 ** max(0, min(attempts - 1, 16))


def celery_policy(handler: Handler) -> FailurePolicy:
    """A Celery task retries a failed handler itself, after `handler_backoff`, until it gives
    up; the run is `retrying` meanwhile, with a lease that covers the wait."""

    def policy(run: HandlerRun, exc: BaseException) -> tuple[str, bool]:
        if gives_up(handler, run, exc):
            return RunState.FAILED, True
        run.lease_expires_at = lease_deadline(handler_backoff(run.attempts))
        return RunState.RETRYING, False

    return policy
