"""The backfill admin: the list with live progress, starting a backfill from a form (run by a
Celery task: eager here, a real worker on Redis in the last test), resuming and cancelling,
each behind its own permission."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from moto import mock_aws

from s3tasks import aws
from s3tasks.models import Backfill, HandlerRun
from s3tasks.ops import backfill_tasks
from s3tasks.ops.backfill_objects import BackfillRequest
from s3tasks.ops.backfill_tasks import record_queued, run_backfill_task
from tests.admin_support import login_staff
from tests.worker_app.handlers import COUNT, runs_per_key
from tests.worker_support import bind

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:s3tasks_backfill_changelist"
START = "admin:s3tasks_backfill_start"
BUCKET = "backfill-admin"
KEYS = ["in/a.csv", "in/with space.csv", "in/plus+sign.csv", "in/ünïcødé.csv", "in/b.txt"]


def make_backfill(**fields) -> Backfill:
    defaults = {"bucket": "acme-uploads", "prefix": "in/", "mode": "inline"}
    return Backfill.objects.create(**{**defaults, **fields})


@pytest.fixture
def s3(aws_credentials, settings):
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": None, "DISPATCH": "inline"}
    with mock_aws():
        aws.reset_clients()
        client = aws.client("s3")
        client.create_bucket(Bucket=BUCKET)
        for key in KEYS:
            client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        yield client
    aws.reset_clients()


@contextlib.contextmanager
def celery_config(**conf) -> Iterator[None]:
    """This process's Celery app with other settings (broker, eagerness); restored after."""
    from project.celery import app

    saved = {name: app.conf[name] for name in conf}

    def use(values: dict) -> None:
        app.conf.update(values)
        app._pool = None  # producer pools are cached per broker URL
        app.amqp._producer_pool = None

    use(conf)
    try:
        yield
    finally:
        use(saved)


def start_form(**fields) -> dict:
    return {"bucket": BUCKET, "prefix": "in/", "mode": "inline", **fields}


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- the list ---------------------------------------------------------------------------------


def test_the_list_shows_each_backfill_s_progress_and_nobody_adds_or_edits_one(client, admin_user):
    make_backfill(listed=1500, expected=3000, matched=1200, dispatched=1100, skipped=90)
    client.force_login(admin_user)

    page = client.get(reverse(CHANGELIST))

    assert page.status_code == 200
    text = page.content.decode()
    assert "1,500 / 3,000 (50 %)" in text and "acme-uploads" in text
    assert reverse("admin:s3tasks_backfill_add") not in text
    row = Backfill.objects.get()
    detail = client.get(reverse("admin:s3tasks_backfill_change", args=[row.pk]))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()


def test_a_running_backfill_with_a_known_total_shows_its_speed_and_time_left(client, admin_user):
    started = timezone.now() - timedelta(seconds=100)
    make_backfill(listed=1000, expected=4000, created_at=started)  # 10 objects/s: 300 s left
    client.force_login(admin_user)

    text = client.get(reverse(CHANGELIST)).content.decode()

    assert "10 objects/s, about 5 min left" in text


def test_the_list_reloads_itself_only_while_a_backfill_is_queued_or_running(client, admin_user):
    client.force_login(admin_user)
    script = "s3tasks/backfill_refresh.js"
    done = make_backfill(state=Backfill.State.COMPLETED)
    assert script not in client.get(reverse(CHANGELIST)).content.decode()

    silent = timezone.now() - timedelta(hours=1)
    dead = make_backfill(updated_at=silent)  # running, but taken for dead
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert script not in page
    assert "no progress since" in page

    for state in (Backfill.State.RUNNING, Backfill.State.QUEUED):
        Backfill.objects.filter(pk=dead.pk).update(state=state, updated_at=timezone.now())
        page = client.get(reverse(CHANGELIST)).content.decode()
        assert f'src="/static/{script}" data-seconds="5"' in page
        assert '<meta http-equiv="refresh" content="5">' in page  # without JavaScript
    assert Backfill.objects.get(pk=done.pk).state == Backfill.State.COMPLETED


def test_cancel_stops_queued_running_interrupted_and_failed_backfills_but_not_finished_ones(
    client, admin_user
):
    running, failed = make_backfill(), make_backfill(state=Backfill.State.FAILED)
    queued = make_backfill(state=Backfill.State.QUEUED)
    done = make_backfill(state=Backfill.State.COMPLETED)
    client.force_login(admin_user)

    response = client.post(
        reverse(CHANGELIST),
        {"action": "cancel", "_selected_action": [running.pk, failed.pk, queued.pk, done.pk]},
        follow=True,
    )

    assert "Cancelled 3 backfills" in response.content.decode()
    states = dict(Backfill.objects.values_list("pk", "state"))
    assert states == {
        running.pk: "cancelled",
        failed.pk: "cancelled",
        queued.pk: "cancelled",
        done.pk: "completed",
    }


def test_cancelling_needs_its_own_permission_beyond_viewing(client):
    row = make_backfill()
    login_staff(client, get_user_model(), "s3tasks.view_backfill")

    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and 'value="cancel"' not in page.content.decode()
    client.post(reverse(CHANGELIST), {"action": "cancel", "_selected_action": [row.pk]})
    assert Backfill.objects.get().state == "running"

    client.logout()
    client.cookies.clear()
    get_user_model().objects.all().delete()
    login_staff(client, get_user_model(), "s3tasks.view_backfill", "s3tasks.cancel_backfill")
    assert 'value="cancel"' in client.get(reverse(CHANGELIST)).content.decode()


# --- starting ---------------------------------------------------------------------------------


def test_starting_and_resuming_need_the_start_permission(client):
    make_backfill(state=Backfill.State.FAILED)
    login_staff(client, get_user_model(), "s3tasks.view_backfill")
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert reverse(START) not in page and 'value="resume"' not in page
    assert client.get(reverse(START)).status_code == 403
    assert client.post(reverse(START), start_form()).status_code == 403
    assert Backfill.objects.count() == 1

    client.logout()
    get_user_model().objects.all().delete()
    login_staff(client, get_user_model(), "s3tasks.view_backfill", "s3tasks.start_backfill")
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert reverse(START) in page and 'value="resume"' in page
    assert client.get(reverse(START)).status_code == 200


def test_the_form_offers_the_registered_handlers_and_the_known_buckets(client, admin_user):
    bind(COUNT, BUCKET)
    client.force_login(admin_user)

    page = client.get(reverse(START))

    text = page.content.decode()
    assert f'<option value="{BUCKET}">' in text
    assert f'name="handlers" value="{COUNT}"' in text
    assert 'type="datetime-local"' in text
    assert 'id="s3tasks-celery-eager"' in text  # the tests' Celery runs tasks in the request


def test_a_started_backfill_is_run_by_the_celery_task_through_the_exactly_once_path(
    client, admin_user, s3
):
    bind(COUNT, BUCKET)
    client.force_login(admin_user)

    response = client.post(reverse(START), start_form(suffix=".csv", count="on"), follow=True)

    row = Backfill.objects.get()
    assert f"Backfill {row.pk} of s3://{BUCKET}/in/ ran: completed." in messages_of(response)
    assert (row.state, row.listed, row.expected, row.matched, row.dispatched) == (
        "completed",
        5,
        5,  # counted first, as asked
        4,
        4,
    )
    assert (row.requested_by, row.suffix, row.mode) == (admin_user.get_username(), ".csv", "inline")
    assert runs_per_key() == dict.fromkeys(KEYS[:4], 1)

    client.post(reverse(START), start_form(suffix=".csv"))  # again: nothing runs twice
    again = Backfill.objects.order_by("pk").last()
    assert (again.state, again.dispatched, again.skipped) == ("completed", 0, 4)
    assert runs_per_key() == dict.fromkeys(KEYS[:4], 1)


def test_named_handlers_and_the_time_window_reach_the_backfill(client, admin_user, s3):
    client.force_login(admin_user)
    later = timezone.now() + timedelta(days=1)

    client.post(
        reverse(START),
        start_form(
            handlers=[COUNT], modified_until=timezone.localtime(later).strftime("%Y-%m-%dT%H:%M")
        ),
    )

    row = Backfill.objects.get()
    assert row.handlers == [COUNT] and row.modified_until is not None
    assert abs(row.modified_until - later) < timedelta(minutes=1)
    assert runs_per_key() == dict.fromkeys(KEYS, 1)  # no rule needed for a named handler


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, "routes object creations to a handler"),  # no rule, no handler named
        ({"handlers": [COUNT], "rate": "0"}, "more than 0 objects per second"),
        ({"handlers": [COUNT], "queue": "q"}, "A queue goes with"),
        (
            {
                "handlers": [COUNT],
                "modified_since": "2024-05-02T00:00",
                "modified_until": "2024-05-01T00:00",
            },
            "Must be later than",
        ),
        ({"handlers": ["no.such.handler"]}, "Select a valid choice"),
    ],
)
def test_a_request_that_cannot_run_is_refused_on_the_form_and_nothing_recorded(
    client, admin_user, fields, error
):
    client.force_login(admin_user)

    page = client.post(reverse(START), start_form(**fields))

    assert page.status_code == 200 and error in page.content.decode()
    assert not Backfill.objects.exists()


def test_without_a_usable_celery_the_form_says_so_and_the_backfill_waits_for_the_command(
    client, admin_user, s3
):
    bind(COUNT, BUCKET)
    client.force_login(admin_user)

    with celery_config(task_always_eager=False, broker_url=None):
        page = client.get(reverse(START)).content.decode()
        assert 'id="s3tasks-celery-problem"' in page
        assert "no Celery broker is configured (CELERY_BROKER_URL)" in page
        assert 'value="Record the backfill"' in page
        response = client.post(reverse(START), start_form(count="on"), follow=True)

    row = Backfill.objects.get()
    assert row.state == Backfill.State.QUEUED and runs_per_key() == {}
    command = f"manage.py s3tasks_backfill --resume {row.pk} --count"
    assert any(command in m for m in messages_of(response)), messages_of(response)

    call_command("s3tasks_backfill", "--resume", str(row.pk), "--count", stdout=StringIO())

    row.refresh_from_db()
    assert (row.state, row.expected, row.dispatched) == ("completed", 5, 5)
    assert runs_per_key() == dict.fromkeys(KEYS, 1)


@pytest.mark.parametrize(
    ("eager", "broker", "problem"),
    [
        (True, None, None),  # runs in the request: the form says that instead
        (False, "redis://127.0.0.1:6379/0", None),
        (False, None, "no Celery broker is configured"),
        (False, "memory://", "no worker outside this process reads"),
    ],
)
def test_what_the_form_says_about_celery_follows_its_configuration(eager, broker, problem):
    with celery_config(task_always_eager=eager, broker_url=broker):
        found = backfill_tasks.celery_problem()
    assert found == problem if problem is None else problem in found


def test_a_broker_that_refuses_the_task_is_reported_and_the_backfill_stays_queued(
    client, admin_user, s3
):
    bind(COUNT, BUCKET)
    client.force_login(admin_user)

    with celery_config(task_always_eager=False, broker_url="redis://127.0.0.1:1/0"):
        assert 'id="s3tasks-celery-problem"' not in client.get(reverse(START)).content.decode()
        response = client.post(reverse(START), start_form(), follow=True)

    row = Backfill.objects.get()
    text = " ".join(messages_of(response))
    assert "could not send to Celery" in text and f"--resume {row.pk}" in text
    assert row.state == Backfill.State.QUEUED
    assert row.errors and row.errors[0].startswith("could not send to Celery")


# --- the task -----------------------------------------------------------------------------------


def test_the_task_runs_a_queued_backfill_once_and_leaves_a_cancelled_one_alone(s3):
    bind(COUNT, BUCKET)
    row = record_queued(BackfillRequest(bucket=BUCKET))
    cancelled = record_queued(BackfillRequest(bucket=BUCKET))
    Backfill.objects.filter(pk=cancelled.pk).update(state=Backfill.State.CANCELLED)

    first = run_backfill_task(row.pk)
    second = run_backfill_task(row.pk)  # the same message delivered again
    skipped = run_backfill_task(cancelled.pk)

    assert first["state"] == "completed" and first["dispatched"] == 5
    assert second == {"backfill": row.pk, "state": "not run", "error": "no longer queued"}
    assert skipped["state"] == "not run"
    assert Backfill.objects.get(pk=cancelled.pk).listed == 0
    assert runs_per_key() == dict.fromkeys(KEYS, 1)


def test_a_worker_that_does_not_know_the_handler_fails_the_backfill_with_the_reason(s3):
    row = record_queued(BackfillRequest(bucket=BUCKET, handlers=(COUNT,)))
    Backfill.objects.filter(pk=row.pk).update(handlers=["gone.from.this.worker"])

    result = run_backfill_task(row.pk)

    row.refresh_from_db()
    assert result["state"] == "not run" and row.state == Backfill.State.FAILED
    assert "no registered handler named 'gone.from.this.worker'" in row.errors[0]
    assert row.finished_at is not None and not HandlerRun.objects.exists()


def test_a_listing_error_before_the_first_page_fails_the_backfill_instead_of_leaving_it_running(
    s3, monkeypatch
):
    bind(COUNT, BUCKET)
    row = record_queued(BackfillRequest(bucket=BUCKET))

    def broken(*args, **kwargs):
        raise ConnectionError("S3 is unreachable")

    monkeypatch.setattr(backfill_tasks, "count_objects", broken)
    result = run_backfill_task(row.pk, count=True)

    row.refresh_from_db()
    assert result["state"] == row.state == Backfill.State.FAILED
    assert row.errors == ["ConnectionError: S3 is unreachable"]


def test_the_task_is_registered_under_its_name_for_workers():
    from project.celery import app

    backfill_tasks.install()

    assert app.tasks[backfill_tasks.TASK_NAME].run is run_backfill_task


# --- resuming -----------------------------------------------------------------------------------


def test_resume_sends_stopped_and_dead_backfills_to_celery_and_leaves_live_and_done_ones(
    client, admin_user, s3
):
    bind(COUNT, BUCKET)
    cancelled = record_queued(BackfillRequest(bucket=BUCKET))
    Backfill.objects.filter(pk=cancelled.pk).update(state=Backfill.State.CANCELLED)
    dead = make_backfill(bucket=BUCKET, updated_at=timezone.now() - timedelta(hours=1))
    live = make_backfill(bucket=BUCKET)
    done = make_backfill(bucket=BUCKET, state=Backfill.State.COMPLETED)
    client.force_login(admin_user)

    response = client.post(
        reverse(CHANGELIST),
        {"action": "resume", "_selected_action": [cancelled.pk, dead.pk, live.pk, done.pk]},
        follow=True,
    )

    text = " ".join(messages_of(response))
    assert "Sent 2 backfills to Celery" in text and "2 completed or running" in text
    states = dict(Backfill.objects.values_list("pk", "state"))
    assert states == {
        cancelled.pk: "completed",
        dead.pk: "completed",
        live.pk: "running",
        done.pk: "completed",
    }
    assert runs_per_key() == dict.fromkeys(KEYS, 1)  # the second one skipped them all
    resumed = Backfill.objects.filter(pk__in=[cancelled.pk, dead.pk])
    assert sorted(resumed.values_list("dispatched", "skipped")) == [(0, 5), (5, 0)]


# --- a real Celery worker -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_backfill_started_in_the_admin_is_run_by_a_real_celery_worker(
    client, admin_user, moto_endpoint, settings, monkeypatch, tmp_path
):
    import boto3

    from tests.celery_support import celery_worker, sending_to_redis, wait_for
    from tests.conftest import REDIS_URL, need, port_open
    from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of

    need(port_open("127.0.0.1", 6379), "needs Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    queue = "s3tasks-backfill-admin-tests"
    settings.S3TASKS = {**settings.S3TASKS, "CELERY_QUEUE": queue}
    monkeypatch.setenv("S3TASKS_ENDPOINT_URL", moto_endpoint)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    keys = [f"in/{n:04d}.csv" for n in range(1005)] + KEYS  # more than a page
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    handler = "tests.dispatch.count"  # known to the worker (-I tests.handlers_for_dispatch)
    client.force_login(admin_user)

    log = tmp_path / "celery.log"
    with sending_to_redis(), log.open("wb") as out:
        with celery_worker("tests.dispatch_worker_settings", queue, out):
            response = client.post(
                reverse(START), start_form(handlers=[handler], count="on"), follow=True
            )
            row = Backfill.objects.get()
            assert f"Backfill {row.pk}" in " ".join(messages_of(response))

            def finished() -> bool:
                """the worker to finish the backfill"""
                return Backfill.objects.get().state not in ("queued", "running")

            wait_for(finished, timeout=120)
    row.refresh_from_db()
    assert row.state == "completed", (row.errors, log.read_text()[-3000:])
    assert (row.pages, row.listed, row.expected, row.dispatched) == (2, 1010, 1010, 1010)
    assert re.search(rf"Task {backfill_tasks.TASK_NAME}\[.*\] succeeded", log.read_text())
    assert all(runs_of(RUNS_BUCKET, key) == 1 for key in keys)


# --- in a browser -------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_list_follows_a_running_backfill_in_chromium_but_keeps_a_selection(
    live_server, monkeypatch, django_user_model, tmp_path
):
    from tests.browser_support import chromium_page, log_in

    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    row = make_backfill(listed=1111, expected=9000)

    def shows(page, listed: str) -> bool:
        return f"{listed} / 9,000" in page.inner_text("#result_list")

    with chromium_page(monkeypatch) as page:
        log_in(page, live_server.url)
        page.goto(f"{live_server.url}{reverse(CHANGELIST)}")
        assert shows(page, "1,111")

        Backfill.objects.filter(pk=row.pk).update(listed=2222, updated_at=timezone.now())
        page.wait_for_function(
            "() => document.querySelector('#result_list')?.innerText.includes('2,222')",
            timeout=15_000,
        )

        page.check("#result_list input.action-select")  # about to cancel it: hold still
        Backfill.objects.filter(pk=row.pk).update(listed=3333, updated_at=timezone.now())
        page.wait_for_timeout(7_000)
        assert shows(page, "2,222") and page.is_checked("#result_list input.action-select")

        page.uncheck("#result_list input.action-select")
        page.wait_for_function(
            "() => document.querySelector('#result_list')?.innerText.includes('3,333')",
            timeout=15_000,
        )
        page.screenshot(path=tmp_path / "backfill-list.png", full_page=True)

        page.click("text=Start a backfill")
        page.wait_for_selector("#s3tasks-celery-eager")
        assert page.locator(f"input[name=handlers][value='{COUNT}']").count() == 1
        page.screenshot(path=tmp_path / "backfill-start.png", full_page=True)
