"""Celery dispatch against a REAL Celery worker subprocess on a Redis broker.

The worker imports `tests.handlers_for_dispatch` (`-I`), uses this test run's database, and
consumes a queue of its own; the test process sends through Redis (not eager).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from s3tasks.models import HandlerRun, RunState
from s3tasks.processing.dispatch import dispatch_event
from s3tasks.rules.routing import Route
from tests.celery_support import celery_worker, run_in_state, sending_to_redis, wait_for
from tests.conftest import REDIS_URL, need, port_open
from tests.factories import make_event
from tests.handlers_for_dispatch import FOLLOWUP_BUCKET, RUNS_BUCKET, runs_of

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUEUE = "s3tasks-dispatch-tests"


@pytest.fixture(scope="module")
def broker(django_db_setup, django_db_blocker) -> Iterator[str]:
    """Point this process's Celery app at Redis (not eager) and start a worker subprocess."""
    need(port_open("127.0.0.1", 6379), "needs Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    log_path = os.environ.get("S3TASKS_CELERY_TEST_LOG", "/dev/null")
    with django_db_blocker.unblock(), open(log_path, "wb") as log, sending_to_redis():
        with celery_worker("tests.dispatch_worker_settings", f"{QUEUE},celery", log):
            yield REDIS_URL


def dispatch(key: str, handler: str):
    return dispatch_event(
        make_event(key), routes=[Route(handler_name=handler, celery_queue=QUEUE)], mode="celery"
    )


def test_event_dispatched_in_celery_mode_runs_in_the_worker(broker):
    outcome = dispatch("worker-ok.csv", "tests.dispatch.count")
    assert outcome.ok
    sent = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    assert sent.celery_task_id and sent.celery_queue == QUEUE
    wait_for(run_in_state(sent.pk, RunState.SUCCEEDED))
    run = HandlerRun.objects.get(pk=sent.pk)
    assert run.attempts == 1 and run.result_summary == '{"counted": "worker-ok.csv"}'
    assert runs_of(RUNS_BUCKET, "worker-ok.csv") == 1


def test_duplicate_delivery_of_a_sent_event_is_not_sent_again(broker, monkeypatch):
    from s3tasks.rules.registry import registry

    task = registry.get("tests.dispatch.count").task
    sent: list[str] = []
    real_send = task.apply_async

    def counting_send(*args, **kwargs):
        sent.append(kwargs["task_id"])
        return real_send(*args, **kwargs)

    monkeypatch.setattr(task, "apply_async", counting_send)
    first = dispatch("worker-dup.csv", "tests.dispatch.count")
    second = dispatch("worker-dup.csv", "tests.dispatch.count")
    assert second.ok and second.runs[0].skipped
    wait_for(run_in_state(first.runs[0].run_id, RunState.SUCCEEDED))
    assert sent == [HandlerRun.objects.get(pk=first.runs[0].run_id).celery_task_id]
    assert runs_of(RUNS_BUCKET, "worker-dup.csv") == 1


def test_failing_handler_retries_with_backoff_then_is_recorded_failed(broker):
    began = time.monotonic()
    outcome = dispatch("worker-bad.csv", "tests.dispatch.write_then_fail")
    assert outcome.ok  # handed to Celery: the failure happens later, in the worker
    run_id = outcome.runs[0].run_id
    wait_for(run_in_state(run_id, RunState.RETRYING, RunState.FAILED))
    wait_for(run_in_state(run_id, RunState.FAILED), timeout=40)
    run = HandlerRun.objects.get(pk=run_id)
    assert run.attempts == 3  # first try + max_retries=2
    assert "RuntimeError: boom on worker-bad.csv" in run.error and "Traceback" in run.traceback
    assert time.monotonic() - began >= 3  # backoff 1 s then 2 s
    assert runs_of(RUNS_BUCKET, "worker-bad.csv") == 0  # each attempt's writes rolled back
    assert runs_of(FOLLOWUP_BUCKET, "worker-bad.csv") == 0  # and its follow-up never sent


def test_followup_command_enqueued_by_the_handler_runs_in_the_worker(broker):
    outcome = dispatch("worker-follow.csv", "tests.dispatch.enqueue_followup")
    wait_for(run_in_state(outcome.runs[0].run_id, RunState.SUCCEEDED))

    def followup_ran() -> bool:
        """the follow-up task to run"""
        return runs_of(FOLLOWUP_BUCKET, "worker-follow.csv") == 1

    wait_for(followup_ran)
