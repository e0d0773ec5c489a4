"""Backfills started from the admin: recorded `queued`, then run by a Celery task.

`record_queued` records the request (state `queued`) and `send_backfill` sends the task
`s3tasks.run_backfill` with the row's id; the task takes the row (`queued` → `running`, so a
second delivery, or a `manage.py s3tasks_backfill --resume ID` that got there first, leaves it
alone) and runs `run_backfill` in the worker. Sent with `resume=True`, it goes on with an
interrupted, failed, cancelled or dead backfill instead (`resume_backfill` decides, in the
worker, under the row's lock).

The task is registered like the handlers' tasks (`processing.celery_tasks`): by `install()`
when the app is ready, only in a process that has imported Celery (a Celery worker), and on
first use anywhere else — so a Lambda cold start never imports Celery for it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.db import transaction
from django.utils import timezone

from s3tasks import aws
from s3tasks.exceptions import BackfillError
from s3tasks.models import Backfill
from s3tasks.ops.backfill import (
    MAX_ERRORS,
    check_request,
    request_of,
    resume_backfill,
    run_backfill,
    start_backfill,
)
from s3tasks.ops.backfill_objects import BackfillRequest, count_objects
from s3tasks.processing.handoff import celery_queue_for

logger = logging.getLogger(__name__)

TASK_NAME = "s3tasks.run_backfill"

_task: list[Any] = []  # the Celery task, made once per process


def backfill_task() -> Any:
    """The Celery task running a backfill in a worker (JSON arguments, never pickle)."""
    if not _task:
        from celery import shared_task

        # Acknowledged when received, not when done: a backfill runs for hours, and a worker
        # that dies mid-way leaves its row `running`, taken for dead after 15 minutes without
        # progress and resumed from its last chunk (`send_backfill(row, resume=True)`), not
        # started over by a redelivery.
        options = {"name": TASK_NAME, "serializer": "json", "acks_late": False}
        _task.append(shared_task(**options)(run_backfill_task))
    return _task[0]


def install() -> None:
    """Register the task in a Celery worker, which must know every task name before a message
    arrives; other processes make it when they first send one."""
    if "celery" in sys.modules:
        backfill_task()


def celery_problem() -> str | None:
    """Why a backfill sent to Celery would not run, from the configuration alone (nothing is
    connected to); None when it should."""
    try:
        from celery import current_app
    except ImportError:
        return "Celery is not installed (pip install celery)"
    conf = current_app.conf
    if conf.task_always_eager:
        return None
    broker = str(conf.broker_url or "")
    if not broker:
        return "no Celery broker is configured (CELERY_BROKER_URL)"
    if broker.startswith("memory://"):
        return "the Celery broker is memory://, which no worker outside this process reads"
    return None


def celery_runs_eagerly() -> bool:
    """Celery runs tasks in the sending process (`task_always_eager`): in the web request."""
    try:
        from celery import current_app
    except ImportError:
        return False
    return bool(current_app.conf.task_always_eager)


# --- sending --------------------------------------------------------------------------------


def record_queued(request: BackfillRequest, *, requested_by: str = "") -> Backfill:
    """Record a backfill as `queued`. Call it outside any transaction (the admin's view is
    non-atomic): the row must be committed before its task is sent, since a worker reads it."""
    with transaction.atomic():
        row = start_backfill(request, requested_by=requested_by)
        row.state = Backfill.State.QUEUED
        row.save(update_fields=["state"])
    return row


def send_backfill(row: Backfill, *, resume: bool = False, count: bool = False) -> str:
    """Send the task for `row`; "" when the broker took it, else why not (also recorded on the
    row, so its page says it). `count`: list the keys once first, for a share and time left."""
    try:
        backfill_task().apply_async(
            args=[row.pk],
            kwargs={"resume": resume, "count": count},
            queue=celery_queue_for(),
        )
    except Exception as exc:  # broker unreachable, Celery missing: the row says so and waits
        error = f"could not send to Celery: {type(exc).__name__}: {exc}"
        logger.warning("s3tasks backfill %s: %s", row.pk, error)
        Backfill.objects.filter(pk=row.pk).update(errors=[*row.errors, error][-MAX_ERRORS:])
        return error
    return ""


# --- running (in the Celery worker) ---------------------------------------------------------


def run_backfill_task(backfill_id: int, resume: bool = False, count: bool = False) -> dict:
    """The task's body: take the backfill, count its objects if asked, and run it. Never
    raises for the backfill's own failures: they are on the row, where the admin shows them."""
    try:
        row = resume_backfill(backfill_id) if resume else take_queued(backfill_id)
    except BackfillError as exc:
        logger.warning("s3tasks backfill %s not run: %s", backfill_id, exc)
        return {"backfill": backfill_id, "state": "not run", "error": str(exc)}
    if row is None:
        logger.info("s3tasks backfill %s is no longer queued: left alone", backfill_id)
        return {"backfill": backfill_id, "state": "not run", "error": "no longer queued"}
    try:
        if count and row.expected is None:
            row.expected = count_objects(aws.client("s3"), request_of(row))
            Backfill.objects.filter(pk=row.pk).update(expected=row.expected)
        result = run_backfill(row)
    except Exception as exc:  # recorded on the row by run_backfill, or here before it started
        logger.exception("s3tasks backfill %s failed", backfill_id)
        if Backfill.objects.filter(pk=backfill_id, state=Backfill.State.RUNNING).exists():
            fail(row, f"{type(exc).__name__}: {exc}")
        row.refresh_from_db()
        return {"backfill": backfill_id, "state": row.state, "error": str(exc)}
    return {
        "backfill": backfill_id,
        "state": result.backfill.state,
        "listed": result.counters.listed,
        "dispatched": result.counters.dispatched,
        "skipped": result.counters.skipped,
        "failed": result.counters.failed,
    }


def take_queued(backfill_id: int) -> Backfill | None:
    """`queued` → `running`, or None when it is not queued any more (cancelled, or taken by
    another delivery or `--resume`). A handler the worker does not know fails it."""
    now = timezone.now()
    taken = Backfill.objects.filter(pk=backfill_id, state=Backfill.State.QUEUED).update(
        state=Backfill.State.RUNNING, updated_at=now
    )
    if not taken:
        return None
    row = Backfill.objects.get(pk=backfill_id)
    try:
        check_request(request_of(row))  # this worker's registry, not the web process's
    except BackfillError as exc:
        fail(row, str(exc))
        raise
    return row


def fail(row: Backfill, error: str) -> None:
    """Mark a backfill `failed` before it listed anything (or before `run_backfill` could)."""
    now = timezone.now()
    Backfill.objects.filter(pk=row.pk).update(
        state=Backfill.State.FAILED,
        finished_at=now,
        updated_at=now,
        errors=[*row.errors, error][-MAX_ERRORS:],
    )
