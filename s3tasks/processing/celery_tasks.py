"""Each handler's Celery task: made here, in the layer that runs handlers, and handed to the
registry (`use_task_factory`) when the app is ready, so `Handler.task` works everywhere; and
its body, `execute_celery_run`.

Celery is imported on first use only: importing it costs ~250 ms, which a Lambda cold start
that runs handlers inline should not pay.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from django.db import transaction

from s3tasks.conf import get_settings
from s3tasks.events import S3Event
from s3tasks.models import HandlerRun
from s3tasks.outages import describe, is_unavailable
from s3tasks.processing.execution import (
    Attempt,
    attempt_task,
    celery_policy,
    handler_backoff,
)
from s3tasks.processing.runs import ensure_run, record_event
from s3tasks.rules.registry import Handler, registry, use_task_factory

logger = logging.getLogger(__name__)

MAX_OUTAGE_BACKOFF = 300  # seconds between a Celery task's tries while the database is down

_tasks: dict[str, Any] = {}


def celery_task(name: str) -> Any:
    """The Celery task running handler `name` (made once per process)."""
    task = _tasks.get(name)
    if task is None:
        task = _tasks[name] = _make_celery_task(name)
    return task


def _make_celery_task(name: str) -> Any:
    """The Celery task that runs this handler in a worker (JSON arguments, never pickle)."""
    from celery import shared_task

    def run_handler(task: Any, event_data: dict[str, Any], run_id: int | None = None) -> Any:
        return execute_celery_run(task, name, event_data, run_id)

    # Celery builds a signature from the function's name: keep it a valid identifier even for
    # handler names such as "reports.nightly-export".
    run_handler.__name__ = re.sub(r"\W|^(?=\d)", "_", name.rsplit(".", 1)[-1])
    # acks_late: a Celery worker that dies mid-task leaves the task on the broker for another
    # worker; the run's exactly-once claim makes that redelivery safe. No Celery retry limit:
    # the run's attempts decide when a handler gives up (`max_retries`), and an unreachable
    # database or broker is retried without using any of them.
    options: dict[str, Any] = {
        "name": name,
        "bind": True,
        "serializer": "json",
        "acks_late": True,
        "reject_on_worker_lost": True,
        "max_retries": None,
    }
    return shared_task(**options)(run_handler)


def install() -> None:
    """Make `Handler.task` work, and register the tasks of handlers already imported when a
    Celery worker is starting (it must know every task name before a message arrives)."""
    use_task_factory(celery_task)
    if "celery" in sys.modules:
        for handler in registry:
            celery_task(handler.name)


# --- the body of every handler's Celery task -----------------------------------------------


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
        attempt = _celery_attempt(handler, event, run_id, task.request.id or "")
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        _drop_broken_connection()
        retries = int(getattr(task.request, "retries", 0) or 0)
        countdown = min(MAX_OUTAGE_BACKOFF, get_settings().RETRY_BACKOFF * 2 ** min(retries, 10))
        logger.warning(
            "s3tasks: %s on s3://%s/%s could not reach the database (%s); trying again in %ss",
            handler_name,
            event.bucket,
            event.key,
            describe(exc),
            countdown,
            extra={
                "dedup_key": event.dedup_key,
                "bucket": event.bucket,
                "key": event.key,
                "handler": handler_name,
                "run_id": run_id,
                "outcome": "unavailable",
            },
        )
        raise task.retry(exc=exc, countdown=countdown)
    if attempt.skipped:
        return {"skipped": True, "state": attempt.run.state}
    if attempt.exception is None:
        return attempt.run.result_summary
    if attempt.permanent:
        raise attempt.exception
    raise task.retry(exc=attempt.exception, countdown=handler_backoff(attempt.run.attempts))


def _celery_attempt(handler: Handler, event: S3Event, run_id: int | None, task_id: str) -> Attempt:
    policy = celery_policy(handler)
    if run_id is not None:
        attempt = attempt_task(run_id, task_id, handler, event, policy)
        if attempt is not None:
            return attempt
        run = HandlerRun.objects.filter(pk=run_id).first()
        if run is not None:  # ended, or another task's (a duplicate): nothing to do
            return Attempt(run=run, skipped=True)
    # sent without dispatch (e.g. `task.delay(event.to_dict())`), or its run was deleted
    record, _ = record_event(event)
    run = ensure_run(record, handler.name)
    attempt = attempt_task(run.pk, task_id, handler, event, policy)
    return attempt or Attempt(run=HandlerRun.objects.get(pk=run.pk), skipped=True)


def _drop_broken_connection() -> None:
    """Close this thread's database connection if an error left it unusable, so the retry
    connects afresh: a Celery worker keeping connections across tasks (`CELERY_DB_REUSE_MAX`)
    would otherwise fail every task on a connection the database server dropped."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:  # never under a caller's transaction (eager Celery)
        connection.close_if_unusable_or_obsolete()
