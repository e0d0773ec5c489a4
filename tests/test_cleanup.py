"""Pruning history (`s3tasks.ops.cleanup`): what goes and what stays, bounded batches, dry
runs, the retention setting and its system check, `manage.py s3tasks_cleanup`, the worker's
cleanup timer, and (PostgreSQL) cleanup alongside dispatch and alongside another cleanup."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from s3tasks.checks import check_history_retention
from s3tasks.conf import build_settings
from s3tasks.models import EventRecord, HandlerRun, MessageFailure, OutboxMessage, Queue, RunState
from s3tasks.ops.cleanup import cleanup_history, describe_age, retention_floor
from s3tasks.processing.dispatch import dispatch_event
from s3tasks.worker import WorkerOptions
from s3tasks.worker.memory_sqs import MemorySQS
from s3tasks.worker.runner import build_consumer, cleanup_pass
from tests.factories import make_event, routes
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of
from tests.worker_support import Recorder, consumer, make_queue, wait_until

RETENTION = timedelta(days=30)
OLD, RECENT = 40, 5  # days


def ago(days: float):
    return timezone.now() - timedelta(days=days)


def record(key: str, *, days: float = OLD) -> EventRecord:
    return EventRecord.objects.create(
        dedup_key=f"dedup-{key}",
        bucket="history",
        key=key,
        event_name="ObjectCreated:Put",
        source="s3",
        received_at=ago(days),
    )


def run(
    event: EventRecord, state: str = RunState.SUCCEEDED, *, days: float = OLD, handler: str = "h"
) -> HandlerRun:
    return HandlerRun.objects.create(
        event=event, handler_name=handler, state=state, created_at=ago(days)
    )


def outbox(*, sent: bool, days: float) -> OutboxMessage:
    return OutboxMessage.objects.create(
        kind="celery",
        target="t",
        created_at=ago(days),
        sent_at=ago(days) if sent else None,
    )


def failure(message_id: str, *, days: float) -> MessageFailure:
    return MessageFailure.objects.create(
        queue_name="q", message_id=message_id, reason="bad", last_seen_at=ago(days)
    )


def keys() -> set[str]:
    return set(EventRecord.objects.values_list("key", flat=True))


@contextmanager
def delete_sizes() -> Iterator[list[tuple[str, int]]]:
    """(table, rows) of every DELETE this thread's connection runs."""
    sizes: list[tuple[str, int]] = []

    def wrapper(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("DELETE"):
            table = re.search(r'DELETE FROM "?(\w+)"?', sql)[1]
            sizes.append((table, context["cursor"].rowcount))
        return result

    with connection.execute_wrapper(wrapper):
        yield sizes


# --- what goes, what stays -------------------------------------------------------------------


@pytest.mark.django_db
def test_old_ended_runs_and_their_events_go_recent_ones_stay():
    done, failed = record("old-done.csv"), record("old-failed.csv")
    run(done), run(failed, RunState.FAILED)
    recent = record("recent.csv", days=RECENT)
    run(recent, days=RECENT)
    report = cleanup_history(RETENTION)
    assert report.counts == {
        "HandlerRun": 2,
        "EventRecord": 2,
        "MessageFailure": 0,
        "OutboxMessage": 0,
    }
    assert keys() == {"recent.csv"} and HandlerRun.objects.count() == 1
    assert report.complete and not report.busy


@pytest.mark.django_db
@pytest.mark.parametrize("state", [RunState.PENDING, RunState.RUNNING, RunState.RETRYING])
def test_an_old_run_that_has_not_ended_stays_with_its_event(state):
    event = record("stuck.csv", days=400)
    unfinished = run(event, state, days=400)
    run(event, RunState.SUCCEEDED, days=400, handler="other")  # its ended sibling goes
    report = cleanup_history(RETENTION)
    assert list(HandlerRun.objects.values_list("pk", flat=True)) == [unfinished.pk]
    assert keys() == {"stuck.csv"}
    assert (report.counts["HandlerRun"], report.counts["EventRecord"]) == (1, 0)


@pytest.mark.django_db
def test_an_old_event_whose_run_is_recent_stays_and_old_events_without_runs_go():
    replayed = record("replayed.csv")
    run(replayed, days=RECENT)  # e.g. a handler bound later, run over old history
    record("unrouted.csv")  # no handler matched: no run at all
    record("fresh-unrouted.csv", days=RECENT)
    cleanup_history(RETENTION)
    assert keys() == {"replayed.csv", "fresh-unrouted.csv"}


@pytest.mark.django_db
def test_message_failures_go_by_when_last_seen():
    failure("gone", days=OLD)
    failure("seen-again", days=RECENT)
    report = cleanup_history(RETENTION)
    assert list(MessageFailure.objects.values_list("message_id", flat=True)) == ["seen-again"]
    assert report.counts["MessageFailure"] == 1


@pytest.mark.django_db
def test_sent_follow_ups_go_by_age_and_unsent_ones_stay_whatever_their_age():
    outbox(sent=True, days=OLD)
    recent_sent = outbox(sent=True, days=RECENT)
    unsent = outbox(sent=False, days=400)
    report = cleanup_history(RETENTION)
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {recent_sent.pk, unsent.pk}
    assert report.counts["OutboxMessage"] == 1


@pytest.mark.django_db
def test_each_delete_takes_at_most_one_batch_of_rows():
    for i in range(25):
        run(record(f"bulk/{i:02d}"))
    with delete_sizes() as sizes:
        report = cleanup_history(RETENTION, batch_size=10)
    by_table: dict[str, list[int]] = {}
    for table, rows in sizes:
        by_table.setdefault(table, []).append(rows)
    assert by_table["s3tasks_handlerrun"] == [10, 10, 5]
    assert by_table["s3tasks_eventrecord"] == [10, 10, 5]
    assert max(rows for _, rows in sizes) <= 10
    assert report.batches == len(sizes) == 6  # the other tables had nothing to walk
    assert EventRecord.objects.count() == 0


@pytest.mark.django_db
def test_rows_kept_ahead_of_due_ones_do_not_stop_the_walk():
    for i in range(12):  # the oldest events all stay: each has a run still pending
        run(record(f"stuck/{i:02d}", days=OLD + 10), RunState.PENDING, days=OLD + 10)
    for i in range(5):
        run(record(f"due/{i:02d}"))
    report = cleanup_history(RETENTION, batch_size=5)
    assert keys() == {f"stuck/{i:02d}" for i in range(12)}
    assert (report.counts["HandlerRun"], report.counts["EventRecord"]) == (5, 5)


@pytest.mark.django_db
def test_rows_of_the_same_age_are_walked_in_primary_key_order_none_skipped():
    same = ago(OLD)
    for i in range(7):
        record(f"tie/{i}")
    EventRecord.objects.update(received_at=same)
    with delete_sizes() as sizes:
        report = cleanup_history(RETENTION, batch_size=3)
    assert [rows for _, rows in sizes] == [3, 3, 1]
    assert report.counts["EventRecord"] == 7 and not EventRecord.objects.exists()


@pytest.mark.django_db
def test_a_dry_run_counts_what_a_real_run_deletes_and_deletes_nothing():
    run(record("a.csv")), run(record("b.csv"))
    run(record("pending.csv"), RunState.PENDING)
    record("no-runs.csv")
    failure("m1", days=OLD)
    outbox(sent=True, days=OLD)
    with delete_sizes() as sizes:
        dry = cleanup_history(RETENTION, dry_run=True)
    assert sizes == [] and EventRecord.objects.count() == 4
    real = cleanup_history(RETENTION)
    assert (
        dry.counts
        == real.counts
        == {
            "HandlerRun": 2,
            "EventRecord": 3,
            "MessageFailure": 1,
            "OutboxMessage": 1,
        }
    )


@pytest.mark.django_db
def test_a_pass_out_of_time_stops_and_says_it_is_incomplete():
    run(record("later.csv"))
    report = cleanup_history(RETENTION, max_seconds=0)
    assert report.total == 0 and not report.complete
    assert EventRecord.objects.count() == 1


@pytest.mark.parametrize(
    "age, said",
    [
        (timedelta(days=1), "1 day"),
        (timedelta(days=30), "30 days"),
        (timedelta(hours=36), "36 h"),
        (timedelta(minutes=90), "90 min"),
        (timedelta(seconds=45), "45 s"),
    ],
)
def test_ages_are_said_in_the_largest_whole_unit(age, said):
    assert describe_age(age) == said


# --- the setting and its check ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"HISTORY_RETENTION": 30}, 'S3TASKS["HISTORY_RETENTION"] is 30; it must be a positive'),
        ({"HISTORY_RETENTION": timedelta(0)}, "timedelta(days=30), or None"),
        ({"CLEANUP_INTERVAL": -1}, 'S3TASKS["CLEANUP_INTERVAL"] must be 0 (off)'),
        ({"CLEANUP_INTERVAL": "hourly"}, "S3TASKS[\"CLEANUP_INTERVAL\"] is 'hourly'"),
    ],
)
def test_a_wrong_retention_setting_names_the_setting(raw, expected):
    with pytest.raises(ImproperlyConfigured, match=re.escape(expected)):
        build_settings(raw)


def test_retention_defaults_to_30_days_and_the_timer_to_off():
    conf = build_settings({})
    assert (conf.HISTORY_RETENTION, conf.CLEANUP_INTERVAL) == (timedelta(days=30), 0)
    assert build_settings({"HISTORY_RETENTION": None}).HISTORY_RETENTION is None


@pytest.mark.django_db
def test_a_retention_shorter_than_a_queue_keeps_messages_is_an_error(settings):
    Queue.objects.update(enabled=False)  # the demo project's queues do not count
    Queue.objects.create(name="short", message_retention_seconds=4 * 86400)
    dlq = Queue.objects.create(name="jobs-dlq", enabled=False, message_retention_seconds=1209600)
    Queue.objects.create(name="jobs", dead_letter_queue=dlq)
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": timedelta(days=7)}
    [error] = check_history_retention(databases=["default"])
    assert error.id == "s3tasks.E006"
    assert "7 days, shorter than the 14 days SQS keeps messages in queue 'jobs-dlq'" in error.msg
    assert "timedelta(seconds=1209600)" in error.hint
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": timedelta(days=14)}
    assert check_history_retention(databases=["default"]) == []
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": None}
    assert check_history_retention(databases=["default"]) == []


@pytest.mark.django_db
def test_a_disabled_queue_that_is_no_dead_letter_queue_does_not_count():
    Queue.objects.update(enabled=False)  # the demo project's queues do not count
    Queue.objects.create(name="old-unused", enabled=False, message_retention_seconds=1209600)
    Queue.objects.create(name="jobs", message_retention_seconds=3600)
    floor = retention_floor()
    assert floor is not None and (floor.queue_name, floor.seconds) == ("jobs", 3600)


@pytest.mark.django_db
@pytest.mark.parametrize("databases", [None, [], ["other"]])
def test_the_retention_check_queries_only_when_asked_to_check_the_database(
    databases, settings, django_assert_num_queries
):
    Queue.objects.create(name="long", message_retention_seconds=1209600)
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": timedelta(days=1)}
    with django_assert_num_queries(0):
        assert check_history_retention(databases=databases) == []
    assert len(check_history_retention(databases=["default"])) == 1


# --- the command ---------------------------------------------------------------------------


def cleanup_command(*args: str) -> str:
    out = StringIO()
    call_command("s3tasks_cleanup", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_the_command_deletes_and_prints_a_table_of_counts():
    run(record("old.csv"))
    outbox(sent=True, days=OLD)
    output = cleanup_command("--batch-size", "50")
    assert "Deleting history older than 30 days, in batches of 50." in output
    rows = dict(re.findall(r"^  (\w+) +(\d+)$", output, re.MULTILINE))
    assert rows == {
        "HandlerRun": "1",
        "EventRecord": "1",
        "MessageFailure": "0",
        "OutboxMessage": "1",
        "total": "3",
    }
    assert re.search(r"3 batch\(es\) in [\d.]+s, the longest \d+ ms", output)
    assert EventRecord.objects.count() == 0


@pytest.mark.django_db
def test_the_command_dry_run_counts_and_deletes_nothing():
    run(record("old.csv"))
    Queue.objects.update(enabled=False)  # the demo project's queues do not count
    output = cleanup_command("--dry-run", "--older-than", "1d12h")
    assert "Counting history older than 36 h" in output
    assert re.search(r"^  HandlerRun +1$", output, re.MULTILINE)
    assert "nothing deleted (--dry-run)" in output
    assert HandlerRun.objects.count() == 1


@pytest.mark.django_db
def test_older_than_wins_over_the_setting(settings):
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": None}
    run(record("ten-days.csv", days=10), days=10)
    cleanup_command("--older-than", "P7D")
    assert EventRecord.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--older-than", "30"], "'30' is not a duration: write a number with a unit"),
        (["--older-than", "0s"], "--older-than must be longer than 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--older-than", "2d"], "2 days is shorter than the 4 days SQS keeps messages"),
    ],
)
def test_the_command_refuses_bad_or_unsafe_arguments(args, message):
    Queue.objects.update(enabled=False)  # the demo project's queues do not count
    Queue.objects.create(name="jobs")  # SQS's default retention: 4 days
    run(record("old.csv"))
    with pytest.raises(CommandError, match=re.escape(message)):
        cleanup_command(*args)
    assert HandlerRun.objects.count() == 1


@pytest.mark.django_db
def test_the_command_without_retention_asks_for_older_than(settings):
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": None}
    with pytest.raises(CommandError, match="pass --older-than DURATION"):
        cleanup_command()


@pytest.mark.django_db
def test_a_database_error_stops_the_pass_and_the_command_fails(monkeypatch):
    from django.db import OperationalError

    from s3tasks.ops import cleanup

    def broken(*args):
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(cleanup, "_window", broken)
    with pytest.raises(CommandError, match=r"cleanup stopped: HandlerRun: OperationalError"):
        cleanup_command()


# --- the worker's timer --------------------------------------------------------------------


def test_the_worker_setting_turns_the_cleanup_timer_on(settings):
    assert WorkerOptions.from_settings().cleanup_interval == 0
    settings.S3TASKS = {**settings.S3TASKS, "CLEANUP_INTERVAL": 3600}
    assert WorkerOptions.from_settings().cleanup_interval == 3600


def test_the_worker_timer_calls_the_cleanup_pass_on_its_interval():
    sqs = MemorySQS()
    make_queue(sqs)
    three = threading.Event()
    calls = []

    def clean() -> None:
        calls.append(1)
        if len(calls) == 3:
            three.set()

    worker = consumer(sqs, Recorder(), exit_when_idle=None, cleanup_interval=0.05)
    worker._cleanup = clean
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        assert three.wait(10), "the cleanup timer did not fire three times"
    finally:
        worker.stop()
        runner.join(5)


def test_without_an_interval_no_cleanup_timer_starts():
    sqs = MemorySQS()
    make_queue(sqs)
    worker = consumer(sqs, Recorder(), exit_when_idle=None)
    worker._cleanup = lambda: None
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        wait_until(
            lambda: any(t.name.startswith("s3tasks-receive") for t in threading.enumerate()),
            10,
            "the worker to start receiving",
            step=0.01,
        )
        assert "s3tasks-cleanup" not in {t.name for t in threading.enumerate()}
    finally:
        worker.stop()
        runner.join(5)


@pytest.mark.django_db(transaction=True)
def test_a_worker_with_the_timer_on_prunes_old_history(settings):
    settings.S3TASKS = {**settings.S3TASKS, "CLEANUP_INTERVAL": 0.05}
    run(record("pruned-by-worker.csv"))
    sqs = MemorySQS()
    make_queue(sqs)
    options = WorkerOptions.from_settings(wait_time=0, dispatch="inline")
    worker = build_consumer(sqs, ["jobs"], options, relay=None, recover=None)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        wait_until(lambda: not EventRecord.objects.exists(), 10, "the timer's cleanup pass")
    finally:
        worker.stop()
        runner.join(5)
    assert HandlerRun.objects.count() == 0


@pytest.mark.django_db(transaction=True)  # the pass closes old connections, as a worker does
def test_the_timer_pass_does_nothing_when_the_retention_is_too_short(settings, caplog):
    Queue.objects.create(name="jobs", message_retention_seconds=1209600)
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": timedelta(days=7)}
    run(record("kept.csv", days=10), days=10)
    cleanup_pass()()
    assert EventRecord.objects.count() == 1
    assert "not cleaning up" in caplog.text and "s3tasks.E006" in caplog.text


@pytest.mark.django_db
def test_the_timer_pass_does_nothing_when_retention_is_off(settings, django_assert_num_queries):
    settings.S3TASKS = {**settings.S3TASKS, "HISTORY_RETENTION": None}
    run(record("kept.csv", days=400), days=400)
    with django_assert_num_queries(0):
        cleanup_pass()()
    assert EventRecord.objects.count() == 1


# --- PostgreSQL: cleanup alongside workers -----------------------------------------------------


@contextmanager
def cleanup_holding_its_first_batch() -> Iterator[dict]:
    """A cleanup on another thread, stopped inside its first batch's transaction (after the
    DELETE ran, before COMMIT) until the block ends; yields its report once it finishes."""
    holding, release = threading.Event(), threading.Event()
    result: dict = {}

    def hold(execute, sql, params, many, context):
        outcome = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("DELETE") and not holding.is_set():
            holding.set()
            release.wait(30)
        return outcome

    def clean() -> None:
        try:
            with connection.execute_wrapper(hold):
                result["report"] = cleanup_history(RETENTION, batch_size=10)
        finally:
            connection.close()

    thread = threading.Thread(target=clean)
    thread.start()
    try:
        assert holding.wait(30), "the cleanup never reached its first DELETE"
        yield result
    finally:
        release.set()
        thread.join(30)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_dispatch_completes_while_a_cleanup_batch_is_open():
    for i in range(30):
        run(record(f"old/{i:02d}"))
    dispatched = threading.Event()

    def dispatch() -> None:
        try:
            event = make_event("new-during-cleanup.csv")
            dispatch_event(event, routes=routes("tests.dispatch.count"), mode="inline")
            dispatched.set()
        finally:
            connection.close()

    with cleanup_holding_its_first_batch() as result:
        worker = threading.Thread(target=dispatch)
        worker.start()
        finished = dispatched.wait(30)  # the cleanup's batch is still open here
        worker.join(30)
    assert finished, "dispatch waited for the cleanup's open batch"
    assert runs_of(RUNS_BUCKET, "new-during-cleanup.csv") == 1
    assert result["report"].counts["HandlerRun"] == 30
    assert keys() == {"new-during-cleanup.csv"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_cleanup_stops_while_another_holds_the_lock():
    for i in range(30):
        run(record(f"old/{i:02d}"))
    with cleanup_holding_its_first_batch() as first:
        second = cleanup_history(RETENTION, batch_size=10)
    assert second.busy and not second.complete and second.total == 0
    assert first["report"].counts["HandlerRun"] == 30 and not first["report"].busy
    assert EventRecord.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_written_for_an_event_the_cleanup_deletes_meanwhile_cannot_commit():
    """A redelivery of an old event adds a run while the cleanup deletes that event. Neither
    waits for the other; the database's foreign key fails the redelivery's transaction, so no
    run is left without its event and the message, retried, records the event again."""
    from django.db import IntegrityError, transaction

    event = record("redelivered.csv")
    inserted, cleaned = threading.Event(), threading.Event()
    failed: list[Exception] = []

    def redelivery() -> None:
        try:
            with transaction.atomic():
                HandlerRun.objects.create(event=event, handler_name="late")
                inserted.set()
                assert cleaned.wait(30)
        except IntegrityError as exc:
            failed.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=redelivery)
    worker.start()
    try:
        assert inserted.wait(30)
        report = cleanup_history(RETENTION)  # returns while the redelivery is still open
    finally:
        cleaned.set()
        worker.join(30)
    assert report.counts["EventRecord"] == 1 and report.complete
    assert len(failed) == 1 and "foreign key" in str(failed[0])
    assert not HandlerRun.objects.exists() and not EventRecord.objects.exists()
