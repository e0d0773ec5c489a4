"""Dispatch on the default database: run records, exactly-once, failures, follow-up commands."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace

import pytest
from django.db import connection

from s3tasks import signals
from s3tasks.models import EventRecord, HandlerRun, OutboxMessage, RunState
from s3tasks.processing.dispatch import dispatch_event, retry_run
from s3tasks.rules.routing import Route
from tests import handlers_for_dispatch
from tests.celery_support import SentTasks
from tests.factories import make_event, routes
from tests.handlers_for_dispatch import FOLLOWUP_BUCKET, RUNS_BUCKET, runs_of

pytestmark = pytest.mark.django_db


def test_inline_dispatch_records_event_and_successful_run_with_timings():
    event = make_event()
    outcome = dispatch_event(
        event,
        routes=routes("tests.dispatch.count"),
        mode="inline",
        message_id="m-1",
        queue_name="q",
    )
    assert outcome.ok and not outcome.error
    record = EventRecord.objects.get(pk=outcome.event_id)
    assert (record.dedup_key, record.message_id, record.queue_name) == (event.dedup_key, "m-1", "q")
    assert record.to_event() == event
    run = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    assert run.state == RunState.SUCCEEDED and run.attempts == 1
    assert run.started_at <= run.finished_at and run.duration_ms >= 0
    assert run.result_summary == '{"counted": "in/a.csv"}'
    assert runs_of(RUNS_BUCKET, "in/a.csv") == 1


def test_duplicate_inline_dispatch_runs_the_handler_once():
    event = make_event("dup.csv")
    first = dispatch_event(event, routes=routes("tests.dispatch.count"), mode="inline")
    second = dispatch_event(event, routes=routes("tests.dispatch.count"), mode="inline")
    assert second.ok and second.runs[0].skipped and second.event_id == first.event_id
    assert runs_of(RUNS_BUCKET, "dup.csv") == 1
    assert HandlerRun.objects.filter(event_id=first.event_id).count() == 1


def test_failing_handler_is_recorded_retrying_and_its_writes_roll_back(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        outcome = dispatch_event(
            make_event("bad.csv"), routes=routes("tests.dispatch.write_then_fail"), mode="inline"
        )
    assert not outcome.ok and not outcome.permanent
    assert "RuntimeError: boom on bad.csv" in outcome.error
    run = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    assert run.state == RunState.RETRYING and run.attempts == 1
    assert "Traceback" in run.traceback and "boom on bad.csv" in run.traceback
    assert runs_of(RUNS_BUCKET, "bad.csv") == 0
    assert not OutboxMessage.objects.exists() and not callbacks


def test_redelivered_failure_runs_again_until_retries_are_exhausted_then_never_again():
    event = make_event("again.csv")
    # write_then_fail allows 2 retries: attempts 1 and 2 are retried, the 3rd gives up
    outcomes = [
        dispatch_event(event, routes=routes("tests.dispatch.write_then_fail"), mode="inline")
        for _ in range(4)
    ]
    assert [o.permanent for o in outcomes] == [False, False, True, True]
    assert [o.runs[0].state for o in outcomes] == ["retrying", "retrying", "failed", "failed"]
    assert outcomes[3].runs[0].skipped  # a fourth delivery does not call the handler
    run = HandlerRun.objects.get(event__dedup_key=event.dedup_key)
    assert (run.state, run.attempts) == (RunState.FAILED, 3)


def test_permanent_failure_is_not_run_again_on_redelivery():
    event = make_event("perm-again.csv")
    handler = routes("tests.dispatch.fail_permanently")
    first = dispatch_event(event, routes=handler, mode="inline")
    again = dispatch_event(event, routes=handler, mode="inline")
    assert first.permanent and again.permanent and again.runs[0].skipped
    assert "cannot handle perm-again.csv" in again.error
    assert HandlerRun.objects.get(event__dedup_key=event.dedup_key).attempts == 1


def test_run_outcomes_keep_what_the_handler_returned_or_raised_but_do_not_compare_it():
    count = routes("tests.dispatch.count")
    done = dispatch_event(make_event("kept.csv"), routes=count, mode="inline")
    failed = dispatch_event(
        make_event("raised.csv"), routes=routes("tests.dispatch.write_then_fail"), mode="inline"
    )
    again = dispatch_event(make_event("kept.csv"), routes=count, mode="inline")

    assert done.runs[0].result == {"counted": "kept.csv"} and done.runs[0].exception is None
    exception = failed.runs[0].exception
    assert isinstance(exception, RuntimeError) and str(exception) == "boom on raised.csv"
    assert failed.runs[0].result is None
    # a run skipped as done has neither: the handler did not run in this call
    assert again.runs[0].skipped and again.runs[0].result is None
    assert replace(done.runs[0], result="other") == done.runs[0]


def test_permanent_failure_sends_run_failed_signal_with_permanent_true():
    seen = []

    def receiver(sender, run, event, exception, permanent, **kwargs):
        seen.append((sender, run.state, type(exception).__name__, permanent))

    signals.run_failed.connect(receiver)
    try:
        outcome = dispatch_event(
            make_event("perm.csv"), routes=routes("tests.dispatch.fail_permanently"), mode="inline"
        )
    finally:
        signals.run_failed.disconnect(receiver)
    assert outcome.permanent and not outcome.ok
    assert seen == [("tests.dispatch.fail_permanently", "failed", "PermanentFailure", True)]


def test_lifecycle_signals_are_sent_in_order():
    seen = []
    hooks = {
        signals.event_received: lambda sender, event, record, message_id, **kw: seen.append(
            ("received", message_id)
        ),
        signals.run_started: lambda sender, run, event, **kw: seen.append(("started", sender)),
        signals.run_succeeded: lambda sender, run, event, result, **kw: seen.append(
            ("succeeded", result)
        ),
    }
    for signal, hook in hooks.items():
        signal.connect(hook)
    try:
        dispatch_event(
            make_event("sig.csv"),
            routes=routes("tests.dispatch.count"),
            mode="inline",
            message_id="m-9",
        )
    finally:
        for signal, hook in hooks.items():
            signal.disconnect(hook)
    assert seen == [
        ("received", "m-9"),
        ("started", "tests.dispatch.count"),
        ("succeeded", {"counted": "sig.csv"}),
    ]


@pytest.mark.parametrize("mode", ["inline", "celery"])
def test_a_handler_this_process_lacks_is_left_pending_for_a_process_that_has_it(mode):
    outcome = dispatch_event(
        make_event(f"unknown-{mode}.csv"),
        routes=routes("nope.missing", "tests.dispatch.count"),
        mode=mode,
    )
    assert not outcome.ok and outcome.deferred and not outcome.permanent
    missing, counted = outcome.runs
    assert missing.deferred and "not registered in this process" in missing.error
    run = HandlerRun.objects.get(pk=missing.run_id)
    assert (run.state, run.attempts, run.error) == (RunState.PENDING, 0, "")
    assert counted.ok


def test_handler_calling_enqueue_sends_the_followup_after_commit(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        outcome = dispatch_event(
            make_event("follow.csv"),
            routes=routes("tests.dispatch.enqueue_followup"),
            mode="inline",
        )
    assert outcome.ok
    message = OutboxMessage.objects.get()
    assert message.sent_at is not None and message.target == "tests.dispatch.followup"
    assert runs_of(FOLLOWUP_BUCKET, "follow.csv") == 1  # eager Celery ran it


def test_handler_returning_commands_enqueues_them(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        outcome = dispatch_event(
            make_event("ret.csv"), routes=routes("tests.dispatch.return_commands"), mode="inline"
        )
    run = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    assert run.result_summary == "1 follow-up command(s)"
    assert OutboxMessage.objects.get().sent_at is not None
    assert runs_of(FOLLOWUP_BUCKET, "ret.csv") == 1


def test_eager_celery_dispatch_runs_and_stores_the_task_id(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        outcome = dispatch_event(
            make_event("eager.csv"), routes=routes("tests.dispatch.count"), mode="celery"
        )
    assert outcome.ok
    run = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    assert run.state == RunState.SUCCEEDED and run.celery_task_id
    again = dispatch_event(
        make_event("eager.csv"), routes=routes("tests.dispatch.count"), mode="celery"
    )
    assert again.runs[0].skipped and runs_of(RUNS_BUCKET, "eager.csv") == 1


def test_eager_celery_failure_retries_then_fails_permanently(
    settings, django_capture_on_commit_callbacks
):
    settings.S3TASKS = {**settings.S3TASKS, "RETRY_BACKOFF": 0}
    with django_capture_on_commit_callbacks(execute=True):
        outcome = dispatch_event(
            make_event("eager-bad.csv"),
            routes=routes("tests.dispatch.write_then_fail"),
            mode="celery",
        )
    run = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    assert run.state == RunState.FAILED and run.attempts == 3  # 1 try + 2 retries
    assert runs_of(RUNS_BUCKET, "eager-bad.csv") == 0


def test_retry_run_reruns_a_failed_run_and_leaves_a_succeeded_one():
    failed = dispatch_event(
        make_event("r.csv"), routes=routes("tests.dispatch.fail_permanently"), mode="inline"
    )
    run = HandlerRun.objects.get(pk=failed.runs[0].run_id)
    again = retry_run(run, mode="inline")
    assert again.state == RunState.FAILED and not again.skipped
    assert HandlerRun.objects.get(pk=run.pk).attempts == 2
    done = dispatch_event(make_event("s.csv"), routes=routes("tests.dispatch.count"), mode="inline")
    succeeded = HandlerRun.objects.get(pk=done.runs[0].run_id)
    assert retry_run(succeeded, mode="inline").skipped
    assert runs_of(RUNS_BUCKET, "s.csv") == 1


def test_celery_dispatch_inside_a_transaction_waits_for_commit(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = dispatch_event(
            make_event("later.csv"), routes=routes("tests.dispatch.count"), mode="celery"
        )
        assert outcome.ok and outcome.runs[0].state == RunState.PENDING
        assert runs_of(RUNS_BUCKET, "later.csv") == 0
    assert len(callbacks) == 1
    callbacks[0]()
    assert HandlerRun.objects.get(pk=outcome.runs[0].run_id).state == RunState.SUCCEEDED


# --- celery hand-off bookkeeping (broker replaced by a recorder) ---------------------------


@pytest.mark.django_db(transaction=True)  # celery sends wait for commit
def test_celery_dispatch_sends_json_args_to_the_routed_queue(monkeypatch, settings):
    sent = SentTasks(monkeypatch, "tests.dispatch.count")
    event = make_event("json.csv")
    outcome = dispatch_event(
        event, routes=[Route("tests.dispatch.count", celery_queue="imports")], mode="celery"
    )
    [call] = sent.calls
    assert call["args"] == [event.to_dict(), outcome.runs[0].run_id]
    assert (call["queue"], call["serializer"]) == ("imports", "json")
    run = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    assert run.state == RunState.PENDING and run.celery_task_id == call["task_id"]
    settings.S3TASKS = {**settings.S3TASKS, "CELERY_QUEUE": "s3"}
    dispatch_event(make_event("q.csv"), routes=routes("tests.dispatch.count"), mode="celery")
    assert sent.calls[-1]["queue"] == "s3"


@pytest.mark.django_db(transaction=True)  # celery sends wait for commit
def test_run_created_but_never_sent_is_sent_on_redelivery(monkeypatch):
    from s3tasks.processing.runs import ensure_run, record_event

    event = make_event("crashed-before-send.csv")
    record, _ = record_event(event)
    ensure_run(record, "tests.dispatch.count")  # the process died right after this commit
    sent = SentTasks(monkeypatch, "tests.dispatch.count")
    outcome = dispatch_event(event, routes=routes("tests.dispatch.count"), mode="celery")
    assert outcome.ok and not outcome.runs[0].skipped and len(sent.calls) == 1


@pytest.mark.django_db(transaction=True)  # celery sends wait for commit
def test_broker_failure_leaves_the_run_unsent_and_the_event_not_ok(monkeypatch):
    from s3tasks.rules.registry import registry

    def refuse(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(registry.get("tests.dispatch.count").task, "apply_async", refuse)
    outcome = dispatch_event(
        make_event("down.csv"), routes=routes("tests.dispatch.count"), mode="celery"
    )
    assert not outcome.ok and "broker down" in outcome.error
    assert HandlerRun.objects.get(pk=outcome.runs[0].run_id).celery_task_id == ""


# --- PostgreSQL: races between workers ----------------------------------------------------


def _race(target, count: int = 2) -> None:
    barrier = threading.Barrier(count)

    def run() -> None:
        try:
            barrier.wait(10)
            target()
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_threads_dispatching_the_same_event_inline_run_it_once(monkeypatch):
    monkeypatch.setattr(handlers_for_dispatch, "RIVALS_SEEN", [])
    event = make_event("race.csv")
    outcomes = []
    _race(
        lambda: outcomes.append(
            dispatch_event(event, routes=routes("tests.dispatch.slow_count"), mode="inline")
        )
    )
    assert len(outcomes) == 2 and all(o.ok for o in outcomes)
    assert sorted(o.runs[0].skipped for o in outcomes) == [False, True]
    assert EventRecord.objects.filter(dedup_key=event.dedup_key).count() == 1
    assert HandlerRun.objects.count() == 1 and runs_of(RUNS_BUCKET, "race.csv") == 1
    assert handlers_for_dispatch.RIVALS_SEEN == [True]  # the other thread waited on our run


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_threads_dispatching_the_same_event_to_celery_send_one_task(monkeypatch):
    sent = SentTasks(monkeypatch, "tests.dispatch.count", delay=0.2)
    event = make_event("race-celery.csv")
    _race(lambda: dispatch_event(event, routes=routes("tests.dispatch.count"), mode="celery"))
    assert len(sent.calls) == 1 and HandlerRun.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_processes_dispatching_the_same_event_run_it_once(tmp_path):
    from tests.conftest import ROOT, subprocess_env

    # A barrier across processes: each says it is ready, then waits for the other.
    code = (
        "import pathlib, time, tests.handlers_for_dispatch as h\n"
        "from s3tasks.processing.dispatch import dispatch_event\n"
        "from s3tasks.rules.routing import Route\n"
        "from tests.factories import make_event\n"
        "import os\n"
        f"barrier = pathlib.Path({str(tmp_path)!r})\n"
        "(barrier / str(os.getpid())).touch()\n"
        "deadline = time.monotonic() + 60\n"
        "while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "o = dispatch_event(make_event('procs.csv'), routes=[Route('tests.dispatch.slow_count')],"
        " mode='inline')\n"
        "print('skipped' if o.runs[0].skipped else 'ran', o.ok, h.RIVALS_SEEN)\n"
    )
    env = subprocess_env()
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    last_lines = sorted(out.strip().splitlines()[-1] for out, _ in results)
    # the process that ran saw the other one wait on its run: the race really happened
    assert last_lines == ["ran True [True]", "skipped True []"]
    assert runs_of(RUNS_BUCKET, "procs.csv") == 1 and HandlerRun.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rolled_back_handler_sends_no_command_on_postgres():
    outcome = dispatch_event(
        make_event("pg-bad.csv"), routes=routes("tests.dispatch.write_then_fail"), mode="inline"
    )
    assert not outcome.ok
    assert not OutboxMessage.objects.exists() and runs_of(FOLLOWUP_BUCKET, "pg-bad.csv") == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_crash_after_commit_before_send_is_sent_once_by_the_relay_on_restart(monkeypatch):
    from s3tasks.followups.outbox import relay_outbox

    with monkeypatch.context() as crash:
        crash.setattr("s3tasks.followups.outbox.relay_after_commit", lambda pk: None)
        outcome = dispatch_event(
            make_event("pg-crash.csv"),
            routes=routes("tests.dispatch.enqueue_followup"),
            mode="inline",
        )
    assert outcome.ok and OutboxMessage.objects.get().sent_at is None
    assert runs_of(FOLLOWUP_BUCKET, "pg-crash.csv") == 0
    assert relay_outbox() == 1  # the restarted worker's periodic relay
    assert relay_outbox() == 0
    assert runs_of(FOLLOWUP_BUCKET, "pg-crash.csv") == 1
