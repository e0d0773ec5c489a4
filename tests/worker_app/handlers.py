"""Handlers for the worker tests, loaded into `manage.py sqs_worker` subprocesses through
`S3TASKS_EXTRA_APPS=tests.worker_app` (autodiscovered as that app's `handlers`).

Each handler counts its real executions in the demo app's `ImportedFile` rows (bucket
`RUNS_BUCKET`, one row per object key), in the same transaction as its run state, so a test
can tell "ran exactly once" from "recorded once". Registered with `@s3_handler` only: the
tests create their own rule rows, so no code binding leaks into other tests' databases.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.db.models import F

from project.demo.models import ImportedFile
from s3tasks import S3Event, TemporaryFailure
from s3tasks.rules.registry import s3_handler

RUNS_BUCKET = "worker-test-runs"
COUNT = "tests.worker.count"
SLOW_COUNT = "tests.worker.slow_count"
ALWAYS_FAIL = "tests.worker.always_fail"
NOOP = "tests.worker.noop"
NOOP_NODB = "tests.worker.noop_nodb"


def count_run(key: str) -> None:
    row, _ = ImportedFile.objects.get_or_create(bucket=RUNS_BUCKET, key=key)
    ImportedFile.objects.filter(pk=row.pk).update(rows=F("rows") + 1)


def runs_per_key() -> dict[str, int]:
    """How many times the counting handlers really ran, per object key."""
    return dict(ImportedFile.objects.filter(bucket=RUNS_BUCKET).values_list("key", "rows"))


@s3_handler(name=COUNT)
def count(event: S3Event) -> str:
    count_run(event.key)
    return event.key


@s3_handler(name=SLOW_COUNT)
def slow_count(event: S3Event) -> str:
    """Counts, then sleeps `WORKER_TEST_SLEEP` seconds (long handlers, shutdown tests); with
    `WORKER_TEST_STARTED_DIR`, first leaves a file there (a test can see it started)."""
    started = os.environ.get("WORKER_TEST_STARTED_DIR")
    if started:
        Path(started, event.key.replace("/", "_")).touch()
    count_run(event.key)
    time.sleep(float(os.environ.get("WORKER_TEST_SLEEP", "1.0")))
    return event.key


@s3_handler(name=ALWAYS_FAIL)
def always_fail(event: S3Event) -> str:
    """A handler that can never succeed: its message must end in the dead-letter queue."""
    raise TemporaryFailure(f"cannot handle {event.key}")


@s3_handler(name=NOOP)
def noop(event: S3Event) -> None:
    """Does nothing: what the throughput benchmark measures is the pipeline around it."""


@s3_handler(name=NOOP_NODB, uses_database=False)
def noop_nodb(event: S3Event) -> None:
    """Does nothing and says so: no savepoint around it (the throughput benchmark's
    `--handler noop_nodb`)."""
