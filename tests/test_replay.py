"""Replay from history (`s3tasks.ops.replay`, `manage.py s3tasks_replay`): an ended run runs
again once per replay, recorded as a replay; deliveries keep their exactly-once."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from s3tasks.models import EventRecord, HandlerRun, RunState
from s3tasks.ops.replay import replay_run, replay_runs, select_runs
from s3tasks.processing.celery_tasks import execute_celery_run
from s3tasks.processing.dispatch import dispatch_event
from tests.celery_support import SentTasks
from tests.factories import make_event, routes
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of
from tests.replay_support import BROKEN, FLAKY, REPLAYED

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def inline_dispatch(settings):
    settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": "inline"}
    BROKEN["on"] = False
    yield
    BROKEN["on"] = False


def deliver(key: str, mode: str = "inline"):
    return dispatch_event(make_event(key), routes=routes(REPLAYED), mode=mode)


def run_of(key: str) -> HandlerRun:
    return HandlerRun.objects.get(handler_name=REPLAYED, event__key=key)


def failed_run(key: str) -> HandlerRun:
    BROKEN["on"] = True
    deliver(key)
    BROKEN["on"] = False
    run = run_of(key)
    assert run.state == RunState.FAILED and runs_of(RUNS_BUCKET, key) == 0
    return run


def test_replaying_a_succeeded_run_runs_the_handler_once_per_replay():
    deliver("in/a.csv")
    run = run_of("in/a.csv")
    first_finish = run.finished_at

    outcome = replay_run(run.pk, by="tester")
    assert outcome.verdict == "replayed" and outcome.state == RunState.SUCCEEDED
    assert runs_of(RUNS_BUCKET, "in/a.csv") == 2
    run.refresh_from_db()
    assert (run.state, run.replays, run.attempts, run.replayed_by) == (
        RunState.SUCCEEDED,
        1,
        1,
        "tester",
    )
    assert run.replayed_at is not None and run.finished_at > first_finish
    assert run.previous_outcome.startswith("succeeded after 1 attempt(s), finished ")
    assert run.previous_outcome.endswith(": handled in/a.csv")

    assert replay_run(run.pk).verdict == "replayed"
    assert runs_of(RUNS_BUCKET, "in/a.csv") == 3
    run.refresh_from_db()
    assert run.replays == 2 and run.attempts == 1


def test_replaying_a_failed_run_runs_it_again_and_records_the_success():
    run = failed_run("in/b.csv")
    outcome = replay_run(run.pk)
    assert outcome.verdict == "replayed"
    run.refresh_from_db()
    assert run.state == RunState.SUCCEEDED and run.error == "" and run.traceback == ""
    assert run.previous_outcome.startswith("failed after 1 attempt(s)")
    assert "PermanentFailure: cannot handle in/b.csv" in run.previous_outcome
    assert runs_of(RUNS_BUCKET, "in/b.csv") == 1


def test_a_replay_that_fails_is_failed_for_good_and_keeps_the_replaced_success():
    deliver("in/c.csv")
    BROKEN["on"] = True
    outcome = replay_run(run_of("in/c.csv").pk)
    assert outcome.verdict == "failed" and "cannot handle in/c.csv" in outcome.error
    run = run_of("in/c.csv")
    assert run.state == RunState.FAILED and run.replays == 1
    assert "handled in/c.csv" in run.previous_outcome
    assert runs_of(RUNS_BUCKET, "in/c.csv") == 1  # the failed replay's write rolled back


def test_an_inline_replay_with_retries_left_still_ends_failed_as_nothing_would_retry_it():
    dispatch_event(make_event("in/f.csv"), routes=routes(FLAKY))
    BROKEN["on"] = True
    run = HandlerRun.objects.get(handler_name=FLAKY)
    assert replay_run(run.pk).verdict == "failed"
    run.refresh_from_db()
    assert run.state == RunState.FAILED  # not `retrying` with no message left to retry it


def test_a_duplicate_delivery_after_a_replay_runs_nothing():
    deliver("in/d.csv")
    replay_run(run_of("in/d.csv").pk)
    outcome = deliver("in/d.csv")
    assert outcome.ok and outcome.runs[0].skipped
    assert runs_of(RUNS_BUCKET, "in/d.csv") == 2
    assert run_of("in/d.csv").replays == 1


@pytest.mark.parametrize("state", [RunState.PENDING, RunState.RUNNING, RunState.RETRYING])
def test_runs_in_flight_are_skipped(state):
    deliver("in/e.csv")
    HandlerRun.objects.filter(handler_name=REPLAYED).update(state=state)
    outcome = replay_run(run_of("in/e.csv").pk)
    assert outcome.verdict == "in_flight" and outcome.state == state
    run = run_of("in/e.csv")
    assert run.replays == 0 and run.state == state
    assert runs_of(RUNS_BUCKET, "in/e.csv") == 1


def test_a_run_whose_handler_is_not_registered_here_is_left_alone():
    deliver("in/g.csv")
    HandlerRun.objects.update(handler_name="tests.replay.elsewhere")
    outcome = replay_run(HandlerRun.objects.get().pk)
    assert outcome.verdict == "no_handler" and "not registered" in outcome.error
    assert HandlerRun.objects.get().replays == 0


def test_select_runs_filters_by_handler_state_and_the_events_received_at():
    deliver("in/old.csv")
    deliver("in/new.csv")
    failed_run("in/bad.csv")
    EventRecord.objects.filter(key="in/old.csv").update(
        received_at=timezone.now() - timedelta(days=3)
    )
    since = timezone.now() - timedelta(days=1)

    def keys(**filters):
        return sorted(select_runs(REPLAYED, **filters).values_list("event__key", flat=True))

    assert keys() == ["in/bad.csv"]  # failed is the default
    assert keys(state="succeeded") == ["in/new.csv", "in/old.csv"]
    assert keys(state="all", since=since) == ["in/bad.csv", "in/new.csv"]
    assert keys(state="all", until=since) == ["in/old.csv"]
    assert not select_runs("tests.replay.other", state="all").exists()


def test_replay_runs_iterates_in_chunks_and_counts(monkeypatch):
    monkeypatch.setattr("s3tasks.ops.replay.CHUNK_SIZE", 2)
    for key in ("in/1.csv", "in/2.csv", "in/3.csv"):
        deliver(key)
    HandlerRun.objects.filter(event__key="in/3.csv").update(state=RunState.RETRYING)
    seen = []
    result = replay_runs(select_runs(REPLAYED, state="all"), progress=lambda r: seen.append(r.done))
    assert (result.count("replayed"), result.count("in_flight"), seen) == (2, 1, [1, 2, 3])
    assert [runs_of(RUNS_BUCKET, f"in/{n}.csv") for n in (1, 2, 3)] == [2, 2, 1]


# --- Celery -------------------------------------------------------------------------------


def test_celery_replay_sends_one_task_with_a_new_id_and_stale_tasks_run_nothing(monkeypatch):
    deliver("in/h.csv")
    run = run_of("in/h.csv")
    HandlerRun.objects.filter(pk=run.pk).update(celery_task_id="old-task")
    sent = SentTasks(monkeypatch, REPLAYED)

    outcome = replay_run(run.pk, mode="celery")
    assert outcome.verdict == "replayed" and outcome.state == RunState.PENDING
    [call] = sent.calls
    run.refresh_from_db()
    assert run.state == RunState.PENDING and run.replays == 1
    assert call["task_id"] == run.celery_task_id != "old-task"
    assert run.lease_expires_at is not None

    # a duplicate delivery, or a second replay, while the task is out: nothing more
    assert deliver("in/h.csv", mode="celery").runs[0].skipped
    assert replay_run(run.pk, mode="celery").verdict == "in_flight"
    assert len(sent.calls) == 1

    task = type("Task", (), {"request": type("Request", (), {"id": "old-task"})()})()
    assert execute_celery_run(task, REPLAYED, call["args"][0], run.pk)["skipped"]
    assert runs_of(RUNS_BUCKET, "in/h.csv") == 1
    task.request.id = call["task_id"]
    execute_celery_run(task, REPLAYED, call["args"][0], run.pk)
    run.refresh_from_db()
    assert run.state == RunState.SUCCEEDED and runs_of(RUNS_BUCKET, "in/h.csv") == 2


def test_celery_replay_refused_by_the_broker_changes_nothing(monkeypatch):
    deliver("in/i.csv")
    before = run_of("in/i.csv")

    def refuse(*args, **kwargs):
        raise RuntimeError("broker says no")

    from s3tasks.rules.registry import registry

    monkeypatch.setattr(registry.get(REPLAYED).task, "apply_async", refuse)
    outcome = replay_run(before.pk, mode="celery")
    assert outcome.verdict == "failed" and "broker says no" in outcome.error
    after = run_of("in/i.csv")
    assert (after.state, after.replays, after.attempts, after.finished_at) == (
        RunState.SUCCEEDED,
        0,
        1,
        before.finished_at,
    )


def test_celery_replay_with_an_eager_celery_runs_the_handler_now():
    from project.celery import app

    assert app.conf.task_always_eager  # the test project's default without a broker
    deliver("in/j.csv")
    outcome = replay_run(run_of("in/j.csv").pk, mode="celery")
    assert outcome.verdict == "replayed" and outcome.state == RunState.SUCCEEDED
    assert runs_of(RUNS_BUCKET, "in/j.csv") == 2
    run = run_of("in/j.csv")
    assert run.replays == 1 and run.celery_task_id


# --- the command --------------------------------------------------------------------------


def replay_command(*args: str) -> str:
    out = StringIO()
    call_command("s3tasks_replay", "--handler", REPLAYED, *args, stdout=out)
    return out.getvalue()


def test_command_dry_run_counts_and_lists_and_changes_nothing():
    deliver("in/k.csv")
    failed_run("in/l.csv")
    out = replay_command("--state", "all", "--dry-run")
    assert "2 run(s) of tests.replay.counted selected: 1 failed, 1 succeeded." in out
    assert "s3://" in out and "in/k.csv" in out and "Nothing replayed (--dry-run)" in out
    assert not HandlerRun.objects.filter(replays__gt=0).exists()
    assert runs_of(RUNS_BUCKET, "in/k.csv") == 1


def test_command_replays_the_failed_runs_by_default_and_summarises():
    deliver("in/m.csv")
    failed_run("in/n.csv")
    out = replay_command("--mode", "inline")
    assert "Replaying 1 run(s) of tests.replay.counted (inline)." in out
    assert "Replayed 1 run(s); skipped 0 in flight; 0 failed in " in out
    assert run_of("in/n.csv").state == RunState.SUCCEEDED
    assert run_of("in/m.csv").replays == 0
    assert run_of("in/n.csv").replayed_by.startswith("manage.py s3tasks_replay")


def test_command_honours_the_received_at_window():
    deliver("in/o.csv")
    deliver("in/p.csv")
    EventRecord.objects.filter(key="in/o.csv").update(received_at="2024-01-01T00:00:00Z")
    out = replay_command("--state", "succeeded", "--since", "2024-01-01", "--until", "2024-01-02")
    assert "Replayed 1 run(s)" in out
    assert (run_of("in/o.csv").replays, run_of("in/p.csv").replays) == (1, 0)


def test_command_exits_1_when_a_replay_fails():
    deliver("in/q.csv")
    BROKEN["on"] = True
    with pytest.raises(CommandError, match=r"1 replay\(s\) failed: run \d+: PermanentFailure"):
        replay_command("--state", "succeeded")


def test_command_counts_runs_in_flight_as_skipped_with_state_all():
    deliver("in/r.csv")
    HandlerRun.objects.update(state=RunState.RUNNING)
    out = replay_command("--state", "all")
    assert "Replayed 0 run(s); skipped 1 in flight; 0 failed" in out


def test_command_refuses_a_handler_not_registered_here_and_names_the_known_ones():
    with pytest.raises(CommandError, match=r"'nope' is not registered .*tests\.replay\.counted"):
        call_command("s3tasks_replay", "--handler", "nope")


def test_command_refuses_an_empty_window():
    with pytest.raises(CommandError, match="--since must be before --until"):
        replay_command("--since", "2024-02-01", "--until", "2024-01-01")


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_command_on_a_terminal_shows_a_rich_progress_bar():
    pytest.importorskip("rich")
    deliver("in/s.csv")
    out = Terminal()
    call_command("s3tasks_replay", "--handler", REPLAYED, "--state", "succeeded", stdout=out)
    assert "replay" in out.getvalue() and "1/1" in out.getvalue()
    assert "replayed 1 · skipped 0 · failed 0" in out.getvalue()
