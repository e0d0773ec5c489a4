"""Run one handler on one event exactly once, whoever calls (inline dispatch or a Celery task).

`run_claimed` is the attempt itself, on a run the caller has locked: batched inline dispatch
locks a batch's runs at once and writes all outcomes in one UPDATE; `attempt_run` (Celery tasks,
admin retries) locks one run, calls it and saves. The run row is locked (`select_for_update` in
`transaction.atomic`; SQLite serialises writers) for the whole attempt, so a racing worker waits
and then sees `succeeded`. The handler's own
writes, the outbox rows of its follow-up commands and the `succeeded` state commit together:
a process killed mid-handler rolls all of it back and a redelivery runs it again cleanly. A
failing handler's writes roll back to a savepoint; the failure itself is recorded.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from s3tasks import signals
from s3tasks.events import S3Event
from s3tasks.exceptions import HandlerFailure
from s3tasks.models import HandlerRun, RunState
from s3tasks.records import ERROR_LIMIT, SUMMARY_LIMIT, truncate
from s3tasks.registry import Handler

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
]


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
    from s3tasks.conf import get_settings

    if handler is not None and handler.max_retries is not None:
        return handler.max_retries
    return get_settings().MAX_RETRIES


def summarize(result: Any) -> str:
    """A short text for `HandlerRun.result_summary`; follow-up commands are submitted here."""
    from s3tasks.commands import is_command_list, submit_all

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


def inline_policy(handler: Handler) -> FailurePolicy:
    """Inline dispatch has no in-process retry: the redelivered message is the retry, so a
    failure is permanent only for `PermanentFailure` or once the attempts exceed the limit."""
    limit = retry_limit(handler)

    def policy(run: HandlerRun, exc: BaseException) -> tuple[str, bool]:
        return RunState.FAILED, is_permanent(exc) or run.attempts > limit

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
        with handler_savepoint():
            result = handler.func(event)
            summary = summarize(result)
    except Exception as exc:
        _finish(run, began)
        state, permanent = on_failure(run, exc)
        run.state = state
        run.error = truncate(f"{type(exc).__name__}: {exc}", ERROR_LIMIT)
        run.traceback = "".join(traceback.format_exception(exc))
        return Attempt(run=run, exception=exc, permanent=permanent)
    _finish(run, began)
    run.state = RunState.SUCCEEDED
    run.error = run.traceback = ""
    run.result_summary = summary
    return Attempt(run=run, result=result)


@contextmanager
def handler_savepoint() -> Iterator[None]:
    """`atomic()` around one handler inside the caller's transaction, for less: the SAVEPOINT
    is only sent before the handler's first SQL statement, and never RELEASEd.

    A failure (an exception, or a handler that swallowed a database error and left the
    transaction marked for rollback) rolls back the handler's writes and drops its `on_commit`
    callbacks, as `atomic()` would. A handler that never touches the database needs no
    savepoint at all, and a kept one ends with its transaction: the two statements per handler
    were ~45% of an inline batch's statements (no-op handler, batches of ten). Only SQL sent
    through Django's connection is seen; a handler writing through a raw driver connection
    must open its own savepoint.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block or not connection.features.uses_savepoints:
        with transaction.atomic():  # no caller's transaction to keep a savepoint in
            yield
        return
    savepoint = _LazySavepoint(connection)
    connection.savepoint_ids.append(savepoint.sid)  # tags on_commit callbacks registered inside
    try:
        with connection.execute_wrapper(savepoint):
            yield
    except BaseException:
        savepoint.roll_back()
        raise
    if connection.needs_rollback:
        savepoint.roll_back()
    else:
        connection.savepoint_ids.pop()


class _LazySavepoint:
    """An execute wrapper that creates savepoint `sid` before the first statement it sees."""

    def __init__(self, connection: Any) -> None:
        connection.savepoint_state += 1
        self.connection = connection
        self.sid = f"s3tasks_handler_{connection.savepoint_state}"
        self.state = "pending"  # -> "creating" -> "created"

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.state == "pending":
            self.state = "creating"  # the SAVEPOINT below passes through this wrapper too
            self.connection._savepoint(self.sid)
            self.state = "created"
        return execute(sql, params, many, context)

    def roll_back(self) -> None:
        """Undo everything since the savepoint (if it was ever needed), as `atomic()` does."""
        connection = self.connection
        connection.savepoint_ids.pop()
        connection.needs_rollback = False
        if self.state == "pending":  # no SQL ran: only the callbacks to forget
            connection.run_on_commit = [
                entry for entry in connection.run_on_commit if self.sid not in entry[0]
            ]
            return
        if self.state != "created" or connection.closed_in_transaction:
            connection.needs_rollback = True  # no savepoint to return to: the batch fails
            return
        try:
            connection.savepoint_rollback(self.sid)
        except DatabaseError:
            connection.needs_rollback = True  # as atomic(): only the outer rollback can clean up


def attempt_run(
    run_id: int, handler: Handler, event: S3Event, on_failure: FailurePolicy
) -> Attempt:
    """Claim run `run_id` under a lock and run `handler` unless it already succeeded."""
    with transaction.atomic():
        run = HandlerRun.objects.select_for_update().get(pk=run_id)
        if run.state == RunState.SUCCEEDED:
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


def mark_unrunnable(run: HandlerRun, exc: BaseException) -> Attempt:
    """Set the outcome of a claimed run that could not even start (unknown handler)."""
    run.state = RunState.FAILED
    run.error = truncate(f"{type(exc).__name__}: {exc}", ERROR_LIMIT)
    run.traceback = ""
    run.finished_at = timezone.now()
    return Attempt(run=run, exception=exc, permanent=False)


def fail_without_running(run_id: int, event: S3Event, exc: BaseException) -> Attempt:
    """Record a run that could not even start (unknown handler), without a crash."""
    with transaction.atomic():
        run = HandlerRun.objects.select_for_update().get(pk=run_id)
        if run.state == RunState.SUCCEEDED:
            return Attempt(run=run, skipped=True)
        attempt = mark_unrunnable(run, exc)
        run.save(update_fields=OUTCOME_FIELDS)
    report(attempt, run.handler_name, event)
    return attempt
