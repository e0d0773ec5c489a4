"""Recovery of runs stuck past their lease: which runs count as stuck, driving them again
exactly once, the `s3tasks_recover` command, the admin action, the worker's timer, and the
check that warns about Celery mode on an unsafe SQLite."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from s3tasks.checks import check_sqlite_for_celery
from s3tasks.models import HandlerRun, RunState
from s3tasks.ops.recovery import find_stuck_runs, recover_stuck_runs
from s3tasks.processing.dispatch import dispatch_event
from tests.factories import make_event, routes
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of
from tests.worker_support import Recorder, consumer, make_queue

pytestmark = pytest.mark.django_db


def handed_off(key: str, *, lease_in: float, handler: str = "tests.dispatch.count") -> HandlerRun:
    """A run as Celery dispatch leaves it: recorded, a task id, a lease (the task then lost)."""
    outcome = dispatch_event(make_event(key), routes=routes(handler), mode="inline")
    run = HandlerRun.objects.get(pk=outcome.runs[0].run_id)
    HandlerRun.objects.filter(pk=run.pk).update(
        state=RunState.PENDING,
        attempts=0,
        celery_task_id="lost-task",
        lease_expires_at=timezone.now() + timedelta(seconds=lease_in),
    )
    from project.demo.models import ImportedFile

    ImportedFile.objects.filter(bucket=RUNS_BUCKET, key=key).delete()  # as if it never ran
    return HandlerRun.objects.get(pk=run.pk)


def test_only_unfinished_handed_off_runs_past_their_lease_are_stuck():
    expired = handed_off("expired.csv", lease_in=-1)
    handed_off("in-time.csv", lease_in=600)
    done = handed_off("done.csv", lease_in=-1)
    HandlerRun.objects.filter(pk=done.pk).update(state=RunState.SUCCEEDED)
    never_sent = handed_off("inline.csv", lease_in=-1)
    HandlerRun.objects.filter(pk=never_sent.pk).update(celery_task_id="")
    assert [r.run_id for r in find_stuck_runs()] == [expired.pk]


def test_older_than_takes_runs_handed_off_that_long_ago_even_within_their_lease(settings):
    settings.S3TASKS = {**settings.S3TASKS, "RUN_LEASE": 600}
    recent = handed_off("recent.csv", lease_in=590)  # handed off 10 s ago
    assert find_stuck_runs() == []
    assert find_stuck_runs(older_than=60) == []
    assert [r.run_id for r in find_stuck_runs(older_than=5)] == [recent.pk]


def test_runs_handed_off_before_leases_existed_count_from_their_creation(settings):
    settings.S3TASKS = {**settings.S3TASKS, "RUN_LEASE": 60}
    legacy = handed_off("legacy.csv", lease_in=0)
    HandlerRun.objects.filter(pk=legacy.pk).update(
        lease_expires_at=None, created_at=timezone.now() - timedelta(seconds=120)
    )
    assert [r.run_id for r in find_stuck_runs()] == [legacy.pk]


def test_recovery_runs_a_stuck_run_once_and_a_second_pass_finds_nothing():
    stuck = handed_off("stuck.csv", lease_in=-1)
    report = recover_stuck_runs(mode="inline")
    assert (len(report.found), report.count("ran")) == (1, 1)
    run = HandlerRun.objects.get(pk=stuck.pk)
    assert (run.state, run.attempts, run.lease_expires_at) == (RunState.SUCCEEDED, 1, None)
    assert runs_of(RUNS_BUCKET, "stuck.csv") == 1
    assert recover_stuck_runs(mode="inline").found == []
    assert runs_of(RUNS_BUCKET, "stuck.csv") == 1


def test_a_stuck_run_resent_to_celery_gets_a_new_task_id_and_lease(settings):
    stuck = handed_off("resend.csv", lease_in=-1)
    report = recover_stuck_runs(mode="celery")  # eager Celery in the test settings
    assert report.count("resent") == 1
    run = HandlerRun.objects.get(pk=stuck.pk)
    assert run.celery_task_id not in ("", "lost-task") and run.state == RunState.SUCCEEDED
    assert runs_of(RUNS_BUCKET, "resend.csv") == 1


def test_a_run_that_finished_between_finding_and_driving_is_left_alone():
    stuck = handed_off("raced.csv", lease_in=-1)
    found = find_stuck_runs()
    HandlerRun.objects.filter(pk=stuck.pk).update(state=RunState.SUCCEEDED)
    from s3tasks.ops.recovery import RecoveryReport, drive_runs

    report = drive_runs([r.run_id for r in found], RecoveryReport(), mode="inline")
    assert report.count("left_alone") == 1 and report.recovered == 0
    assert runs_of(RUNS_BUCKET, "raced.csv") == 0


def test_a_stuck_run_whose_handler_fails_again_is_retried_by_a_later_pass_after_backoff():
    stuck = handed_off("flaky.csv", lease_in=-1, handler="tests.dispatch.write_then_fail")
    recover_stuck_runs(mode="inline")
    run = HandlerRun.objects.get(pk=stuck.pk)
    assert (run.state, run.attempts) == (RunState.RETRYING, 1)
    assert run.lease_expires_at is not None and run.lease_expires_at > timezone.now()


def test_a_stuck_run_of_a_handler_this_process_lacks_is_not_touched():
    stuck = handed_off("nobody.csv", lease_in=-1)
    HandlerRun.objects.filter(pk=stuck.pk).update(handler_name="release2.only")
    report = recover_stuck_runs(mode="inline")
    assert report.count("no_handler") == 1
    assert HandlerRun.objects.get(pk=stuck.pk).attempts == 0


def test_dry_run_lists_stuck_runs_and_changes_nothing():
    stuck = handed_off("dry.csv", lease_in=-1)
    out = StringIO()
    call_command("s3tasks_recover", "--dry-run", stdout=out)
    assert f"run {stuck.pk}" in out.getvalue() and "s3://dispatch-bucket/dry.csv" in out.getvalue()
    assert "1 stuck run(s); nothing changed" in out.getvalue()
    assert HandlerRun.objects.get(pk=stuck.pk).state == RunState.PENDING


def test_recover_command_drives_stuck_runs_and_says_what_it_did():
    handed_off("cmd.csv", lease_in=-1)
    out = StringIO()
    call_command("s3tasks_recover", "--dispatch", "inline", stdout=out)
    assert "1 stuck run(s): 0 re-sent to Celery, 1 run inline" in out.getvalue()
    assert runs_of(RUNS_BUCKET, "cmd.csv") == 1


def test_admin_recover_action_reports_the_truth(admin_client):
    stuck = handed_off("admin-stuck.csv", lease_in=-1)
    in_time = handed_off("admin-in-time.csv", lease_in=600)
    url = reverse("admin:s3tasks_handlerrun_changelist")
    response = admin_client.post(
        url,
        {"action": "recover_stuck_runs", "_selected_action": [stuck.pk, in_time.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert (
        "1 stuck run re-sent to Celery" in html
        and "1 not stuck (finished or in time), left alone" in html
    )
    assert HandlerRun.objects.get(pk=stuck.pk).state == RunState.SUCCEEDED
    assert HandlerRun.objects.get(pk=in_time.pk).state == RunState.PENDING


def test_the_worker_timer_runs_recovery_while_the_database_is_up():
    from s3tasks.worker.memory_sqs import MemorySQS

    sqs = MemorySQS()
    make_queue(sqs)
    calls = []
    three = threading.Event()

    def recover() -> None:
        calls.append(time.monotonic())
        if len(calls) == 3:
            three.set()

    worker = consumer(sqs, Recorder(), exit_when_idle=None, recovery_interval=0.1)
    worker._recover = recover
    runner = threading.Thread(target=worker.run)
    runner.start()
    assert three.wait(10), "the recovery timer did not fire three times"
    worker.stop()
    runner.join(5)


def test_celery_mode_on_sqlite_without_busy_timeout_and_immediate_is_warned(settings):
    settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": "celery"}
    from django.db import connections

    options = connections["default"].settings_dict["OPTIONS"]
    saved = dict(options)
    try:
        options.clear()
        if connections["default"].vendor != "sqlite":
            assert check_sqlite_for_celery() == []
            return
        [warning] = check_sqlite_for_celery()
        assert warning.id == "s3tasks.W010" and '"transaction_mode": "IMMEDIATE"' in warning.hint
        options.update(saved)
        assert check_sqlite_for_celery() == []  # the example project's settings are safe
        settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": "inline"}
        options.clear()
        assert check_sqlite_for_celery() == []
    finally:
        options.clear()
        options.update(saved)


def test_routing_s3tasks_models_to_another_database_is_an_error(monkeypatch):
    from django.db import router

    from s3tasks.checks import check_one_database

    assert check_one_database() == []

    def away(model, **hints):
        return "other" if model._meta.app_label == "s3tasks" else "default"

    monkeypatch.setattr(router, "db_for_write", away)
    monkeypatch.setattr(router, "db_for_read", away)
    [error] = check_one_database()
    assert error.id == "s3tasks.E005" and "HandlerRun -> 'other'" in error.msg
