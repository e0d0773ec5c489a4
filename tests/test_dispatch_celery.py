"""Celery mode, statement by statement: a batch is recorded in one transaction whose new runs
carry their task ids and leases already, then their tasks are published through one producer;
a handler's task is one transaction of two statements; a task owns its run, so a second task
for the same run runs nothing.

The broker is replaced by `SentTasks` (which records sends) or Celery runs the task in this
process (`task.apply`); tests/test_celery_crash.py kills a real process between the steps.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from django.db import IntegrityError, OperationalError, transaction
from django.test.utils import CaptureQueriesContext

from s3tasks.models import EventRecord, HandlerRun, OutboxMessage, RunState
from s3tasks.processing import celery_tasks, execution
from s3tasks.processing.dispatch import BatchItem, dispatch_batch
from s3tasks.processing.messages import InboundMessage, process_messages
from s3tasks.processing.runs import ensure_run, new_record, record_event
from s3tasks.rules.registry import registry, s3_handler
from tests.celery_support import SentTasks
from tests.factories import make_event, routes
from tests.handlers_for_dispatch import RUNS_BUCKET, count_run, runs_of
from tests.worker_support import bind, s3_body

# celery mode hands runs off once the rows are committed: real transactions
pytestmark = pytest.mark.django_db(transaction=True)

COUNT = "tests.dispatch.count"


TAKEN = make_event("taken.csv")


@s3_handler(name="tests.celery.swallow_error")
def swallow_error(event) -> None:
    count_run(RUNS_BUCKET, event.key)
    try:
        with transaction.atomic(savepoint=False):
            new_record(TAKEN).save()
            new_record(TAKEN).save()  # the same dedup key
    except IntegrityError:
        pass  # swallowed: Django marks the task's transaction for rollback


def items(*keys: str, handler: str = COUNT) -> list[BatchItem]:
    return [BatchItem(make_event(key), routes(handler), message_id=f"m-{key}") for key in keys]


def statements(queries: CaptureQueriesContext) -> list[str]:
    """The first word of each statement sent (BEGIN and COMMIT included; an `executemany`,
    logged as "N times: …", counts once)."""
    words = [q["sql"].split() for q in queries.captured_queries]
    return [(w[2] if w[1:2] == ["times:"] else w[0]).upper() for w in words]


def record_statements() -> list[str]:
    """What records a batch's events and runs: on PostgreSQL two INSERTs that also read the
    rows that existed (`WITH … INSERT … SELECT`), elsewhere two plain INSERTs."""
    from django.db import connection

    return ["WITH", "WITH"] if connection.vendor == "postgresql" else ["INSERT", "INSERT"]


@pytest.fixture
def broker(monkeypatch) -> None:
    """Celery not eager: `SentTasks` keeps the tasks, nothing runs them in this process."""
    monkeypatch.setitem(registry.get(COUNT).task.app.conf, "task_always_eager", False)


def handed_off(key: str, handler: str = COUNT) -> HandlerRun:
    """A run recorded and handed off to a broker that keeps the task (nothing runs it)."""
    with pytest.MonkeyPatch.context() as patch:
        SentTasks(patch, handler)
        [outcome] = dispatch_batch(items(key, handler=handler), mode="celery")
    return HandlerRun.objects.get(pk=outcome.runs[0].run_id)


def run_task(run: HandlerRun, task_id: str, key: str) -> object:
    """Run the run's handler task in this process, as task `task_id`; its return value."""
    task = registry.get(run.handler_name).task
    return task.apply(args=[make_event(key).to_dict(), run.pk], task_id=task_id).get()


# --- the hand-off -------------------------------------------------------------------------


def test_a_batch_is_recorded_and_handed_off_in_one_transaction_of_two_statements(
    monkeypatch, broker
):
    from django.db import connection

    sent = SentTasks(monkeypatch, COUNT)
    keys = [f"one-tx-{i}.csv" for i in range(10)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = dispatch_batch(items(*keys), mode="celery")
    assert all(o.ok for o in outcomes)
    # the batch's events, and its runs with their task ids and leases; published after COMMIT
    assert statements(queries) == ["BEGIN", *record_statements(), "COMMIT"]
    assert len(sent.calls) == 10
    assert len({id(call["producer"]) for call in sent.calls}) == 1  # one producer for all
    runs = HandlerRun.objects.all()
    assert {r.celery_task_id for r in runs} == {call["task_id"] for call in sent.calls}
    assert all(r.lease_expires_at is not None and r.state == RunState.PENDING for r in runs)


def test_a_redelivered_batch_costs_no_more_statements_than_a_new_one_and_sends_nothing(
    monkeypatch, broker
):
    from django.db import connection

    sent = SentTasks(monkeypatch, COUNT)
    keys = [f"again-{i}.csv" for i in range(10)]
    with CaptureQueriesContext(connection) as new:
        dispatch_batch(items(*keys), mode="celery")
    with CaptureQueriesContext(connection) as again:
        outcomes = dispatch_batch(items(*keys), mode="celery")
    assert all(o.ok and o.runs[0].skipped for o in outcomes)
    if connection.vendor == "postgresql":  # each INSERT reads the rows that existed
        assert statements(again) == statements(new) == ["BEGIN", "WITH", "WITH", "COMMIT"]
    else:  # SQLite runs in this process: a statement is no round trip
        assert statements(again) == ["BEGIN", "INSERT", "SELECT", "INSERT", "SELECT", "COMMIT"]
    assert len(sent.calls) == 10


def test_a_redelivered_message_publishes_its_pending_runs_again_with_the_same_task_ids(
    monkeypatch, broker
):
    """The process that committed the runs may have died before publishing: a message SQS
    delivers again (receive count 2) sends the tasks of runs still pending, same task ids; a
    task that was published after all is then a copy that finds its run done."""
    sent = SentTasks(monkeypatch, COUNT)
    keys = [f"redelivered-{i}.csv" for i in range(3)]
    dispatch_batch(items(*keys), mode="celery")
    first = {call["task_id"] for call in sent.calls}
    redelivered = [replace(item, redelivered=True) for item in items(*keys)]
    outcomes = dispatch_batch(redelivered, mode="celery")
    assert all(o.ok and not o.runs[0].skipped for o in outcomes)
    assert [call["task_id"] for call in sent.calls[3:]] == [
        call["task_id"] for call in sent.calls[:3]
    ]
    assert set(HandlerRun.objects.values_list("celery_task_id", flat=True)) == first
    # a second message with the same event (S3 sent it twice) is not a redelivery: nothing sent
    assert all(o.runs[0].skipped for o in dispatch_batch(items(*keys), mode="celery"))
    assert len(sent.calls) == 6


def test_a_run_that_started_or_ended_is_not_published_again_by_a_redelivery(monkeypatch):
    run = handed_off("started.csv")
    assert run_task(run, run.celery_task_id, "started.csv") == '{"counted": "started.csv"}'
    sent = SentTasks(monkeypatch, COUNT)
    [again] = dispatch_batch([replace(items("started.csv")[0], redelivered=True)], mode="celery")
    assert again.ok and again.runs[0].skipped and sent.calls == []


def test_the_worker_marks_a_message_received_before_as_redelivered(monkeypatch, broker):
    bind(COUNT, "redelivery-bucket")
    sent = SentTasks(monkeypatch, COUNT)
    body = s3_body("redelivery-bucket", "in/x.csv")
    first = process_messages([InboundMessage("m-1", body, receive_count=1)], dispatch_mode="celery")
    again = process_messages([InboundMessage("m-1", body, receive_count=2)], dispatch_mode="celery")
    assert [o.deletable for o in (*first, *again)] == [True, True]
    assert len(sent.calls) == 2 and sent.calls[0]["task_id"] == sent.calls[1]["task_id"]


def test_a_broker_failing_midway_keeps_what_it_accepted_and_leaves_the_rest_unsent(monkeypatch):
    tried: list[str] = []

    def flaky(args=None, kwargs=None, **options):
        tried.append(options["task_id"])
        if len(tried) == 3:
            raise ConnectionError("broker went away")

    monkeypatch.setattr(registry.get(COUNT).task, "apply_async", flaky)
    outcomes = dispatch_batch(items(*[f"flaky-{i}.csv" for i in range(4)]), mode="celery")
    assert len(tried) == 3  # the broker is gone: the fourth is not even tried
    sent = [o for o in outcomes if o.ok]
    unsent = [o for o in outcomes if not o.ok]
    assert len(sent) == 2 and len(unsent) == 2
    assert all(o.unavailable and "broker went away" in o.error for o in unsent)
    runs = HandlerRun.objects.in_bulk([o.runs[0].run_id for o in outcomes])
    assert sorted(runs[o.runs[0].run_id].celery_task_id for o in sent) == sorted(tried[:2])
    for o in unsent:  # unsent: the redelivered message sends them
        run = runs[o.runs[0].run_id]
        assert (run.celery_task_id, run.lease_expires_at) == ("", None)


# --- the handler's task -------------------------------------------------------------------


@pytest.mark.parametrize("handler", ["tests.dispatch.noop_with_savepoint", "tests.dispatch.noop"])
def test_a_handler_task_is_one_transaction_of_two_statements(handler):
    from django.db import connection

    run = handed_off(f"task-{handler}.csv", handler)
    with CaptureQueriesContext(connection) as queries:
        run_task(run, run.celery_task_id, f"task-{handler}.csv")
    # lock the run, run the handler (no savepoint), record the outcome with the attempt
    assert statements(queries) == ["BEGIN", "SELECT", "UPDATE", "COMMIT"]
    done = HandlerRun.objects.get(pk=run.pk)
    assert (done.state, done.attempts, done.lease_expires_at) == (RunState.SUCCEEDED, 1, None)


def test_a_second_task_for_a_run_another_task_owns_runs_nothing():
    run = handed_off("owned.csv")
    assert run_task(run, "someone-else", "owned.csv") == {"skipped": True, "state": "pending"}
    assert runs_of(RUNS_BUCKET, "owned.csv") == 0
    assert HandlerRun.objects.get(pk=run.pk).attempts == 0
    assert run_task(run, run.celery_task_id, "owned.csv") == '{"counted": "owned.csv"}'
    # Celery delivering the same task again (a worker lost before its ack) finds it done
    assert run_task(run, run.celery_task_id, "owned.csv")["skipped"]
    assert runs_of(RUNS_BUCKET, "owned.csv") == 1


def test_a_task_published_before_its_hand_off_committed_takes_the_unsent_run(monkeypatch):
    event = make_event("early.csv")
    record, _ = record_event(event)
    run = ensure_run(record, COUNT)  # the dispatcher died after publishing, before its commit
    assert run_task(run, "published-then-died", "early.csv") == '{"counted": "early.csv"}'
    assert HandlerRun.objects.get(pk=run.pk).celery_task_id == "published-then-died"
    sent = SentTasks(monkeypatch, COUNT)
    [again] = dispatch_batch(items("early.csv"), mode="celery")  # the redelivered message
    assert again.ok and again.runs[0].skipped and sent.calls == []
    assert runs_of(RUNS_BUCKET, "early.csv") == 1


def test_a_failing_task_rolls_back_its_writes_and_records_each_attempt(settings):
    settings.S3TASKS = {**settings.S3TASKS, "RETRY_BACKOFF": 0}
    run = handed_off("fails.csv", "tests.dispatch.write_then_fail")
    run_task_result = registry.get(run.handler_name).task.apply(
        args=[make_event("fails.csv").to_dict(), run.pk], task_id=run.celery_task_id
    )
    assert isinstance(run_task_result.result, RuntimeError)  # retried (eagerly), then gave up
    failed = HandlerRun.objects.get(pk=run.pk)
    assert (failed.state, failed.attempts) == (RunState.FAILED, 3)  # 1 try + max_retries=2
    assert "RuntimeError: boom on fails.csv" in failed.error and "Traceback" in failed.traceback
    assert failed.celery_task_id == run.celery_task_id and failed.lease_expires_at is None
    assert runs_of(RUNS_BUCKET, "fails.csv") == 0 and not OutboxMessage.objects.exists()


def test_a_handler_swallowing_a_database_error_fails_its_task_attempt(settings):
    settings.S3TASKS = {**settings.S3TASKS, "MAX_RETRIES": 0}
    run = handed_off("swallowed.csv", "tests.celery.swallow_error")
    result = registry.get(run.handler_name).task.apply(
        args=[make_event("swallowed.csv").to_dict(), run.pk], task_id=run.celery_task_id
    )
    assert type(result.result).__name__ == "SwallowedDatabaseError"
    failed = HandlerRun.objects.get(pk=run.pk)
    assert (failed.state, failed.attempts) == (RunState.FAILED, 1)
    assert runs_of(RUNS_BUCKET, "swallowed.csv") == 0
    assert not EventRecord.objects.filter(dedup_key=TAKEN.dedup_key).exists()


def test_a_failed_attempt_is_not_recorded_over_an_attempt_that_came_after_it():
    run = handed_off("overtaken.csv")
    rolled_back = HandlerRun.objects.get(pk=run.pk)
    rolled_back.attempts, rolled_back.state, rolled_back.error = 1, RunState.RETRYING, "boom"
    HandlerRun.objects.filter(pk=run.pk).update(attempts=1, state=RunState.SUCCEEDED)
    assert not execution._save_failed_attempt(rolled_back)
    assert HandlerRun.objects.get(pk=run.pk).state == RunState.SUCCEEDED


def test_an_unreachable_database_drops_a_broken_connection_before_the_task_retries(monkeypatch):
    closed: list[bool] = []
    connection = transaction.get_connection()
    monkeypatch.setattr(connection, "close_if_unusable_or_obsolete", lambda: closed.append(True))

    def refuse(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(execution, "claim_run", refuse)
    task = SimpleNamespace(
        request=SimpleNamespace(id="t-1", retries=0),
        retry=lambda exc, countdown: RuntimeError(f"retry in {countdown}s"),
    )
    with pytest.raises(RuntimeError, match="retry in"):
        celery_tasks.execute_celery_run(task, COUNT, make_event("down.csv").to_dict(), 1)
    assert closed == [True]
    with transaction.atomic(), pytest.raises(RuntimeError, match="retry in"):
        celery_tasks.execute_celery_run(task, COUNT, make_event("down.csv").to_dict(), 1)
    assert closed == [True]  # never under a caller's transaction (eager Celery)
