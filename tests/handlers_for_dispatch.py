"""Handlers and tasks for the dispatch tests, importable by a Celery worker subprocess
(`celery -A project worker -I tests.handlers_for_dispatch`).

They count their runs in the demo app's `ImportedFile` rows (bucket `RUNS_BUCKET`), so a
test in another process can see how many times a handler really ran. Registered with
`@s3_handler` only (no code bindings, so no configuration rows are created on migrate).
"""

from __future__ import annotations

import time

from celery import shared_task
from django.db import connection
from django.db.models import F

from project.demo.models import ImportedFile
from s3tasks import PermanentFailure, S3Event, enqueue
from s3tasks.followups.commands import EnqueueTask, PublishSQS
from s3tasks.rules.registry import s3_handler

RUNS_BUCKET = "dispatch-test-runs"
FOLLOWUP_BUCKET = "dispatch-test-followups"
FOLLOWUP_TASK = "tests.dispatch.followup"


def count_run(bucket: str, key: str) -> None:
    """Add one to the run counter of (bucket, key)."""
    row, _ = ImportedFile.objects.get_or_create(bucket=bucket, key=key)
    ImportedFile.objects.filter(pk=row.pk).update(rows=F("rows") + 1)


def runs_of(bucket: str, key: str) -> int:
    row = ImportedFile.objects.filter(bucket=bucket, key=key).first()
    return row.rows if row else 0


@s3_handler(name="tests.dispatch.count")
def count(event: S3Event) -> dict:
    count_run(RUNS_BUCKET, event.key)
    return {"counted": event.key}


# What each `slow_count` run saw while holding its run: True when a racing dispatcher was
# waiting on a lock of ours (PostgreSQL), so race tests can assert the overlap really happened.
RIVALS_SEEN: list[bool] = []
HOLD_FOR_RIVAL = 5.0  # seconds a run waits at most for a rival to block on it


def wait_for_blocked_rival(timeout: float) -> bool:
    """Hold our transaction until another session of this database waits on a lock (True), or
    `timeout` passes (False). PostgreSQL only; elsewhere just hold for `timeout` (False)."""
    if connection.vendor != "postgresql":
        time.sleep(timeout)
        return False
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # else cached per transaction
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False


@s3_handler(name="tests.dispatch.slow_count")
def slow_count(event: S3Event) -> str:
    count_run(RUNS_BUCKET, event.key)
    RIVALS_SEEN.append(wait_for_blocked_rival(HOLD_FOR_RIVAL))
    return "slow"


@s3_handler(name="tests.dispatch.write_then_fail", max_retries=2)
def write_then_fail(event: S3Event) -> None:
    count_run(RUNS_BUCKET, event.key)  # rolled back with the failure
    enqueue(FOLLOWUP_TASK, event.key)  # rolled back too: never sent
    raise RuntimeError(f"boom on {event.key}")


@s3_handler(name="tests.dispatch.fail_permanently")
def fail_permanently(event: S3Event) -> None:
    raise PermanentFailure(f"cannot handle {event.key}")


@s3_handler(name="tests.dispatch.enqueue_followup")
def enqueue_followup(event: S3Event) -> str:
    count_run(RUNS_BUCKET, event.key)
    enqueue(FOLLOWUP_TASK, event.key)
    return "enqueued"


@s3_handler(name="tests.dispatch.return_commands")
def return_commands(event: S3Event) -> list:
    count_run(RUNS_BUCKET, event.key)
    commands: list = [EnqueueTask(FOLLOWUP_TASK, (event.key,))]
    if event.raw.get("notify_queue"):
        commands.append(PublishSQS(event.raw["notify_queue"], {"key": event.key}))
    return commands


@shared_task(name=FOLLOWUP_TASK, serializer="json")
def followup(key: str) -> str:
    count_run(FOLLOWUP_BUCKET, key)
    return key


@s3_handler(name="tests.dispatch.noop", uses_database=False)
def noop(event: S3Event) -> None:
    return None


@s3_handler(name="tests.dispatch.noop_with_savepoint")
def noop_with_savepoint(event: S3Event) -> None:
    return None


class SimulatedCrash(BaseException):
    """Stands in for the process dying mid-batch (not an `Exception`: nothing catches it)."""


@s3_handler(name="tests.dispatch.count_or_crash")
def count_or_crash(event: S3Event) -> str:
    count_run(RUNS_BUCKET, event.key)
    if event.raw.get("crash"):
        raise SimulatedCrash(event.key)
    return "counted"
