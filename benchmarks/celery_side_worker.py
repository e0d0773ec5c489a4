"""What the Celery worker of `benchmarks/celery_side.py` imports (`-I`): a plain no-op Celery
task (the baseline), the floor task (a claim's two statements, nothing else), two no-op
s3tasks handlers, and a completion clock.

The clock appends `time.time()` to a file per process and thread (`BENCH_TIMES_DIR`) after
every task, plain or s3tasks alike: one buffered write, so it costs both the same and next to
nothing. The driver counts the lines to know when the worker is done.
"""

from __future__ import annotations

import os
import threading
import time
from typing import IO, Any

from celery import shared_task
from celery.signals import task_postrun

from s3tasks.rules.registry import s3_handler

PLAIN_TASK = "benchmarks.plain_noop"
FLOOR_TASK = "benchmarks.floor_claim"
HANDLER = "benchmarks.celery_noop"
HANDLER_NO_DB = "benchmarks.celery_noop_nodb"


@shared_task(name=PLAIN_TASK, serializer="json", acks_late=True, reject_on_worker_lost=True)
def plain_noop(event_data: dict, run_id: int | None = None) -> None:
    """The baseline: the same arguments and delivery options as a handler's task, no work."""
    return None


@shared_task(name=FLOOR_TASK, serializer="json", acks_late=True, reject_on_worker_lost=True)
def floor_claim(event_data: dict, run_id: int | None = None) -> None:
    """The floor of any durable claim through Django: the plain task's arguments, plus one
    transaction that locks the run's row and writes it (what a run's claim and outcome need
    at the least: two statements and a commit), no s3tasks code."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT id FROM s3tasks_handlerrun WHERE id = %s FOR UPDATE", [run_id])
        cursor.execute(
            "UPDATE s3tasks_handlerrun SET attempts = attempts + 1 WHERE id = %s", [run_id]
        )


@s3_handler(name=HANDLER)
def celery_noop(event: Any) -> None:
    return None


@s3_handler(name=HANDLER_NO_DB, uses_database=False)
def celery_noop_nodb(event: Any) -> None:
    return None


_clock = threading.local()
TIMES_DIR = os.environ.get("BENCH_TIMES_DIR", "")  # unset: tasks run in the driver, no clock


def _times_file() -> IO[str]:
    out = getattr(_clock, "out", None)
    if out is None:
        name = f"{os.getpid()}-{threading.get_ident()}.times"
        out = _clock.out = open(os.path.join(TIMES_DIR, name), "a")  # noqa: SIM115
    return out


@task_postrun.connect
def _completed(sender: Any = None, **kwargs: Any) -> None:
    if TIMES_DIR:
        out = _times_file()
        out.write(f"{time.time():.6f}\n")
        out.flush()
