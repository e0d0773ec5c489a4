"""Nothing strands, against a REAL Celery worker on Redis: a claim that hits a database error
is retried without counting as an attempt, and a task the broker lost is found by its lease
and re-sent. Both runs end `succeeded`, and their handler ran once."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from s3tasks.models import HandlerRun, RunState
from s3tasks.ops.recovery import recover_stuck_runs
from tests.celery_support import celery_worker, run_in_state, sending_to_redis, wait_for
from tests.conftest import REDIS_URL, need, port_open
from tests.factories import make_event
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUEUE = "s3tasks-recovery-tests"


@pytest.fixture
def broker() -> Iterator[str]:
    """This process sends through Redis (not eager); no worker runs until a test starts one."""
    need(port_open("127.0.0.1", 6379), "needs Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    with sending_to_redis() as url:
        yield url


@contextlib.contextmanager
def worker_logging_to(log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out, celery_worker("tests.recovery_worker_settings", QUEUE, out) as w:
        yield w


def dispatch_to_celery(key: str) -> int:
    from s3tasks.processing.dispatch import dispatch_event
    from s3tasks.rules.routing import Route

    outcome = dispatch_event(
        make_event(key),
        routes=[Route(handler_name="tests.dispatch.count", celery_queue=QUEUE)],
        mode="celery",
    )
    assert outcome.ok
    return outcome.runs[0].run_id


@contextlib.contextmanager
def holding_the_run(run_id: int) -> Iterator[None]:
    """Hold a real database lock that the worker's claim of `run_id` runs into."""
    if connection.vendor == "sqlite":
        other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the database's write lock
    else:
        import psycopg

        db = connection.settings_dict
        other = psycopg.connect(
            dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"]
        )
        other.execute("SELECT id FROM s3tasks_handlerrun WHERE id = %s FOR UPDATE", [run_id])
    try:
        yield
    finally:
        other.close()  # closing ends the transaction and releases the lock


def test_a_database_error_at_claim_time_is_retried_and_is_not_a_handler_failure(broker, tmp_path):
    run_id = dispatch_to_celery("claim-error.csv")
    log = tmp_path / "celery.log"
    with worker_logging_to(log):
        with holding_the_run(run_id):

            def claim_failed() -> bool:
                """the worker's claim to fail on the held lock and be retried"""
                return "could not reach the database" in log.read_text()

            try:
                wait_for(claim_failed, timeout=60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nworker log:\n{log.read_text()[-3000:]}") from None
            assert HandlerRun.objects.get(pk=run_id).attempts == 0
        # the lock is released: a later retry of the same task claims the run and runs it
        wait_for(run_in_state(run_id, RunState.SUCCEEDED), timeout=60)
    run = HandlerRun.objects.get(pk=run_id)
    assert (run.state, run.attempts, run.error, run.lease_expires_at) == (
        RunState.SUCCEEDED,
        1,
        "",
        None,
    )
    assert runs_of(RUNS_BUCKET, "claim-error.csv") == 1


def test_a_task_the_broker_lost_is_found_by_its_lease_and_runs_once(broker, tmp_path):
    import redis

    run_id = dispatch_to_celery("lost-task.csv")
    sent = HandlerRun.objects.get(pk=run_id)
    assert sent.celery_task_id and sent.lease_expires_at is not None
    redis.Redis.from_url(REDIS_URL).flushdb()  # the broker loses every task it held
    assert recover_stuck_runs().found == []  # its lease has not run out yet
    with worker_logging_to(tmp_path / "celery.log"):
        assert HandlerRun.objects.get(pk=run_id).state == RunState.PENDING  # stranded
        report = recover_stuck_runs(older_than=0)
        assert [r.run_id for r in report.found] == [run_id] and report.count("resent") == 1
        wait_for(run_in_state(run_id, RunState.SUCCEEDED), timeout=60)
        assert recover_stuck_runs(older_than=0).found == []  # done: nothing left to recover
    run = HandlerRun.objects.get(pk=run_id)
    assert run.attempts == 1 and run.celery_task_id != sent.celery_task_id
    assert runs_of(RUNS_BUCKET, "lost-task.csv") == 1
