"""The Celery hand-off survives a crash between its steps. A process dispatching a batch in
celery mode is killed (SIGKILL) right after the batch's rows commit (its runs carry their task
ids, nothing is published yet) or right after its tasks were published (before its SQS message
would be deleted); the batch is then delivered again — as SQS's redelivery of the message,
which publishes the pending runs' tasks again, or as another delivery, which sends nothing —
and, once the runs' lease has run out, recovery makes its pass. Counted in Redis: the tasks
published. Then a REAL Celery worker runs the queue: every handler runs exactly once.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from s3tasks.models import HandlerRun, RunState
from s3tasks.ops.recovery import recover_stuck_runs
from s3tasks.processing.dispatch import BatchItem, dispatch_batch
from s3tasks.rules.routing import Route
from tests.celery_support import celery_worker, sending_to_redis, wait_for
from tests.conftest import REDIS_URL, ROOT, need, port_open, subprocess_env
from tests.factories import make_event
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUEUE = "s3tasks-crash-tests"

# Run by `manage.py shell -c` with this test's database and Redis (not eager).
DISPATCH_AND_DIE = """
import os, signal
import tests.handlers_for_dispatch
from s3tasks.processing import dispatch, handoff
from s3tasks.rules.routing import Route
from tests.factories import make_event


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def then_die(step):
    def wrapped(*args, **kwargs):
        result = step(*args, **kwargs)
        die()
        return result
    return wrapped


crash_point = {crash_point!r}
if crash_point == "after the rows commit":
    handoff._publish = die
else:
    handoff._publish = then_die(handoff._publish)
route = Route("tests.dispatch.count", celery_queue={queue!r})
dispatch.dispatch_batch(
    [dispatch.BatchItem(make_event(key), [route]) for key in {keys!r}], mode="celery"
)
print("still alive")
"""


@pytest.fixture
def redis() -> Iterator[object]:
    need(port_open("127.0.0.1", 6379), "needs Redis on 127.0.0.1:6379")
    import redis as redis_client

    client = redis_client.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


def dispatch_and_die(crash_point: str, keys: list[str]) -> None:
    code = DISPATCH_AND_DIE.format(crash_point=crash_point, queue=QUEUE, keys=keys)
    env = subprocess_env(CELERY_BROKER_URL=REDIS_URL)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("crash_point", "published_before", "redelivered", "resent_by_recovery"),
    [
        # the message comes back (receive count 2): it publishes the pending runs' tasks
        ("after the rows commit", 0, True, 0),
        ("after publishing", 3, True, 0),  # copies, same task ids: each finds its run done
        # no redelivery (e.g. the SNS endpoint): recovery re-sends at the lease's end
        ("after the rows commit", 0, False, 3),
        ("after publishing", 3, False, 0),
    ],
)
def test_a_crash_between_commit_and_publish_loses_and_doubles_no_run(
    redis, tmp_path, crash_point, published_before, redelivered, resent_by_recovery
):
    keys = [f"crash-{crash_point.replace(' ', '-')}-{redelivered}-{i}.csv" for i in range(3)]
    dispatch_and_die(crash_point, keys)
    assert redis.llen(QUEUE) == published_before
    runs = HandlerRun.objects.filter(event__key__in=keys)
    assert runs.count() == 3 and set(runs.values_list("state", flat=True)) == {RunState.PENDING}
    committed = set(runs.values_list("celery_task_id", flat=True))
    assert len(committed - {""}) == 3  # committed handed off, whether published or not

    route = Route("tests.dispatch.count", celery_queue=QUEUE)
    with sending_to_redis():  # the same batch again: SQS's redelivery, or another delivery
        items = [BatchItem(make_event(key), [route], redelivered=redelivered) for key in keys]
        outcomes = dispatch_batch(items, mode="celery")
    assert all(o.ok and o.runs[0].skipped != redelivered for o in outcomes)
    assert redis.llen(QUEUE) == published_before + (3 if redelivered else 0)

    log = tmp_path / "celery.log"
    with log.open("wb") as out, celery_worker("tests.dispatch_worker_settings", QUEUE, out):

        def drained() -> bool:
            """the worker to run every task it was sent"""
            return redis.llen(QUEUE) == 0 and redis.hlen("unacked") == 0

        def done() -> bool:
            """every run to succeed"""
            return drained() and set(runs.values_list("state", flat=True)) == {RunState.SUCCEEDED}

        try:
            wait_for(drained, timeout=60)
            # RUN_LEASE later, recovery's pass: only runs whose task never reached the broker
            runs.exclude(state=RunState.SUCCEEDED).update(
                lease_expires_at=timezone.now() - timedelta(seconds=1)
            )
            with sending_to_redis():
                report = recover_stuck_runs(mode="celery")
            assert report.count("resent") == resent_by_recovery and not report.errors
            wait_for(done, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{log.read_text()[-3000:]}") from None
        time.sleep(0.5)  # a stale task still being traced would have counted by now
    assert [runs_of(RUNS_BUCKET, key) for key in keys] == [1, 1, 1]
    assert set(runs.values_list("attempts", flat=True)) == {1}
    ran = set(runs.values_list("celery_task_id", flat=True))
    assert (ran == committed) == (resent_by_recovery == 0)  # else recovery's new tasks


def test_a_broker_that_is_down_gets_no_task_and_the_redelivery_sends_each_once(redis, tmp_path):
    """Redis refused for real (nothing listens on the port): the batch's runs are committed,
    their task ids taken back, the outcome says unavailable (the message stays); once the
    broker is back, the redelivered message sends each task once and a worker runs it once."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    keys = [f"broker-down-{i}.csv" for i in range(3)]
    route = Route("tests.dispatch.count", celery_queue=QUEUE)
    with sending_to_redis(f"redis://127.0.0.1:{closed}/0"):
        down = dispatch_batch([BatchItem(make_event(key), [route]) for key in keys], mode="celery")
    assert all(o.unavailable and not o.ok for o in down)
    runs = HandlerRun.objects.filter(event__key__in=keys)
    assert set(runs.values_list("celery_task_id", "lease_expires_at")) == {("", None)}

    with sending_to_redis():
        items = [BatchItem(make_event(key), [route], redelivered=True) for key in keys]
        assert all(o.ok for o in dispatch_batch(items, mode="celery"))
    assert redis.llen(QUEUE) == 3
    log = tmp_path / "celery.log"
    with log.open("wb") as out, celery_worker("tests.dispatch_worker_settings", QUEUE, out):
        try:
            wait_for(lambda: set(runs.values_list("state", flat=True)) == {RunState.SUCCEEDED})
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{log.read_text()[-3000:]}") from None
    assert [runs_of(RUNS_BUCKET, key) for key in keys] == [1, 1, 1]
    assert redis.llen(QUEUE) == 0
