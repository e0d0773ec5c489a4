"""Admin pages for history (events, runs, outbox, malformed messages): view-only,
searchable, filterable; the retry action and the "send test event" page, which need the
custom permission `s3tasks.run_handlers`, including permission denials."""

from __future__ import annotations

from functools import partial

import pytest
from admin_support import login_staff
from django.urls import reverse

from s3tasks.events import EventSource, S3Event
from s3tasks.models import (
    Bucket,
    EventRecord,
    HandlerBinding,
    HandlerRun,
    MessageFailure,
    NotificationRule,
    OutboxMessage,
    RunState,
)
from s3tasks.processing.dispatch import dispatch_event
from s3tasks.rules.registry import s3_handler
from tests.factories import make_event

pytestmark = pytest.mark.django_db

FLAKY = "tests.admin.flaky"
STEADY = "tests.admin.steady"
BROKEN = {"on": True}


@s3_handler(name=FLAKY)
def flaky(event: S3Event) -> str:
    if BROKEN["on"]:
        raise RuntimeError(f"cannot parse {event.key}")
    return f"parsed {event.key}"


@s3_handler(name=STEADY)
def steady(event: S3Event) -> str:
    return f"saw {event.key}"


@pytest.fixture(autouse=True)
def inline_dispatch(settings):
    settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": "inline", "RULES_CHECK_INTERVAL": 0}
    BROKEN["on"] = True
    yield
    BROKEN["on"] = True


@pytest.fixture
def staff_client(client, django_user_model):
    """A logged-in staff user holding exactly the given `app.codename` permissions."""
    return partial(login_staff, client, django_user_model)


@pytest.fixture
def bound_bucket(django_capture_on_commit_callbacks):
    """Bucket `reports` whose uploads under `in/` run the flaky and the steady handler."""
    with django_capture_on_commit_callbacks(execute=True):
        bucket = Bucket.objects.create(name="reports")
        rule = NotificationRule.objects.create(
            bucket=bucket, events=["s3:ObjectCreated:*"], prefix="in/"
        )
        HandlerBinding.objects.create(rule=rule, handler_name=FLAKY)
        HandlerBinding.objects.create(rule=rule, handler_name=STEADY)
    from s3tasks.rules.routing import router

    router.invalidate()
    return bucket


@pytest.fixture
def failed_run(bound_bucket) -> HandlerRun:
    outcome = dispatch_event(
        make_event("in/q1 report.csv", bucket="reports", source=EventSource.SNS),
        message_id="m-1",
        queue_name="s3tasks-events",
    )
    assert not outcome.ok
    return HandlerRun.objects.get(handler_name=FLAKY)


def test_event_list_is_searchable_by_key_and_filterable_by_source(admin_client, bound_bucket):
    dispatch_event(make_event("in/q1 report.csv", bucket="reports", source=EventSource.SNS))
    dispatch_event(make_event("in/other.csv", bucket="reports"))
    url = reverse("admin:s3tasks_eventrecord_changelist")
    found = admin_client.get(url, {"q": "q1 report"}).content.decode()
    assert "in/q1 report.csv" in found and "in/other.csv" not in found
    by_source = admin_client.get(url, {"source__exact": "s3"}).content.decode()
    assert "in/other.csv" in by_source and "in/q1 report.csv" not in by_source
    by_date = admin_client.get(url, {"received_at__gte": "2000-01-01T00:00:00+00:00"}).status_code
    assert by_date == 200


def test_event_page_shows_pretty_payload_and_runs_and_is_not_editable(admin_client, failed_run):
    record = failed_run.event
    page = admin_client.get(reverse("admin:s3tasks_eventrecord_change", args=[record.pk]))
    html = page.content.decode()
    assert "<pre" in html and "&quot;key&quot;: &quot;in/q1+report.csv&quot;" in html
    assert FLAKY in html and STEADY in html
    assert 'name="_save"' not in html
    assert admin_client.get(reverse("admin:s3tasks_eventrecord_add")).status_code == 403
    delete = reverse("admin:s3tasks_eventrecord_delete", args=[record.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert EventRecord.objects.filter(pk=record.pk).exists()


def test_run_list_filters_by_state_and_handler(admin_client, failed_run):
    url = reverse("admin:s3tasks_handlerrun_changelist")
    failed = admin_client.get(url, {"state__exact": "retrying"}).content.decode()
    assert "cannot parse in/q1 report.csv" in failed
    assert "saw in/q1" not in failed
    steady_runs = admin_client.get(url, {"handler_name": STEADY}).context["cl"].result_count
    assert steady_runs == 1
    assert (
        admin_client.get(url, {"created_at__gte": "2000-01-01T00:00:00+00:00"}).status_code == 200
    )


def test_run_page_shows_error_and_traceback_in_pre_blocks(admin_client, failed_run):
    html = admin_client.get(
        reverse("admin:s3tasks_handlerrun_change", args=[failed_run.pk])
    ).content.decode()
    assert "Traceback (most recent call last)" in html
    assert html.count("<pre") >= 2
    assert 'name="_save"' not in html


def retry(client, runs):
    return client.post(
        reverse("admin:s3tasks_handlerrun_changelist"),
        {"action": "retry_failed_runs", "_selected_action": [r.pk for r in runs]},
        follow=True,
    )


def test_retry_action_reruns_failed_runs_once_fixed_and_leaves_others_alone(
    admin_client, failed_run
):
    BROKEN["on"] = False
    steady_run = HandlerRun.objects.get(handler_name=STEADY)
    response = retry(admin_client, [failed_run, steady_run])
    assert "Retried 1 failed run: 1 succeeded, 1 not failed, left alone." in (
        response.content.decode()
    )
    failed_run.refresh_from_db()
    assert failed_run.state == RunState.SUCCEEDED
    assert failed_run.result_summary == "parsed in/q1 report.csv"
    steady_run.refresh_from_db()
    assert steady_run.attempts == 1
    retry(admin_client, [failed_run])  # idempotent: a succeeded run is not run again
    failed_run.refresh_from_db()
    assert failed_run.attempts == 2


def test_retry_message_counts_two_runs_in_the_plural(admin_client, bound_bucket):
    dispatch_event(make_event("in/a.csv", bucket="reports", source=EventSource.SNS))
    dispatch_event(make_event("in/b.csv", bucket="reports", source=EventSource.SNS))
    BROKEN["on"] = False
    failed = list(HandlerRun.objects.filter(handler_name=FLAKY))
    assert len(failed) == 2
    html = retry(admin_client, failed).content.decode()
    assert "Retried 2 failed runs: 2 succeeded." in html


def test_retry_that_fails_again_reports_the_error(admin_client, failed_run):
    html = retry(admin_client, [failed_run]).content.decode()
    assert "failed again: " in html and "cannot parse" in html
    failed_run.refresh_from_db()
    assert failed_run.state == RunState.RETRYING and failed_run.attempts == 2


def test_view_only_staff_cannot_retry(staff_client, failed_run):
    client = staff_client("s3tasks.view_handlerrun", "s3tasks.view_eventrecord")
    page = client.get(reverse("admin:s3tasks_handlerrun_changelist")).content.decode()
    assert "retry_failed_runs" not in page
    BROKEN["on"] = False
    retry(client, [failed_run])
    failed_run.refresh_from_db()
    assert failed_run.state == RunState.RETRYING and failed_run.attempts == 1


def test_change_permission_on_runs_does_not_allow_running_handlers(staff_client, failed_run):
    """`change_handlerrun` was borrowed for retries before `run_handlers` existed: no more."""
    client = staff_client("s3tasks.change_handlerrun", "s3tasks.view_eventrecord")
    page = client.get(reverse("admin:s3tasks_handlerrun_changelist")).content.decode()
    assert "retry_failed_runs" not in page and "recover_stuck_runs" not in page
    BROKEN["on"] = False
    retry(client, [failed_run])
    failed_run.refresh_from_db()
    assert failed_run.state == RunState.RETRYING and failed_run.attempts == 1
    assert client.get(reverse("admin:s3tasks_send_test_event")).status_code == 403


def test_run_handlers_permission_allows_retry_on_read_only_pages(staff_client, failed_run):
    client = staff_client("s3tasks.view_handlerrun", "s3tasks.run_handlers")
    page = client.get(reverse("admin:s3tasks_handlerrun_changelist")).content.decode()
    assert "retry_failed_runs" in page and "recover_stuck_runs" in page
    change = reverse("admin:s3tasks_handlerrun_change", args=[failed_run.pk])
    assert 'name="_save"' not in client.get(change).content.decode()  # the run stays read-only
    BROKEN["on"] = False
    html = retry(client, [failed_run]).content.decode()
    assert "Retried 1 failed run: 1 succeeded." in html
    failed_run.refresh_from_db()
    assert failed_run.state == RunState.SUCCEEDED


def test_send_test_event_dispatches_through_routing_and_shows_the_outcome(
    admin_client, bound_bucket
):
    BROKEN["on"] = False
    url = reverse("admin:s3tasks_send_test_event")
    form = admin_client.get(url, {"bucket": "reports", "key": "in/x.csv"}).content.decode()
    assert 'value="in/x.csv"' in form
    response = admin_client.post(
        url, {"bucket": "reports", "key": "in/x.csv", "event_name": "ObjectCreated:Put"}
    )
    html = response.content.decode()
    assert 'id="test-event-outcome"' in html and "Dispatched:" in html
    record = EventRecord.objects.get(key="in/x.csv")
    assert record.source == EventSource.ADMIN
    states = dict(record.runs.values_list("handler_name", "state"))
    assert states == {FLAKY: RunState.SUCCEEDED, STEADY: RunState.SUCCEEDED}
    admin_client.post(
        url, {"bucket": "reports", "key": "in/x.csv", "event_name": "ObjectCreated:Put"}
    )
    assert EventRecord.objects.filter(key="in/x.csv").count() == 2  # each send is a new event


def test_send_test_event_without_matching_rule_says_nothing_ran(admin_client, bound_bucket):
    response = admin_client.post(
        reverse("admin:s3tasks_send_test_event"),
        {"bucket": "reports", "key": "out/x.csv", "event_name": "ObjectCreated:Put"},
    )
    assert "No rule matched: no handler ran." in response.content.decode()


def test_send_test_event_needs_the_run_permission(staff_client, bound_bucket):
    client = staff_client("s3tasks.view_eventrecord")
    url = reverse("admin:s3tasks_send_test_event")
    assert client.get(url).status_code == 403
    data = {"bucket": "reports", "key": "in/x.csv", "event_name": "ObjectCreated:Put"}
    assert client.post(url, data).status_code == 403
    assert not EventRecord.objects.exists()
    page = client.get(reverse("admin:s3tasks_eventrecord_changelist")).content.decode()
    assert "Send test event" not in page


def test_run_handlers_permission_opens_the_send_test_event_page(staff_client, bound_bucket):
    client = staff_client("s3tasks.view_eventrecord", "s3tasks.run_handlers")
    page = client.get(reverse("admin:s3tasks_eventrecord_changelist")).content.decode()
    assert "Send test event" in page
    data = {"bucket": "reports", "key": "in/x.csv", "event_name": "ObjectCreated:Put"}
    response = client.post(reverse("admin:s3tasks_send_test_event"), data)
    assert response.status_code == 200 and 'id="test-event-outcome"' in response.content.decode()
    assert EventRecord.objects.filter(key="in/x.csv", source=EventSource.ADMIN).exists()


def test_staff_without_permissions_gets_403_on_history_pages(staff_client, failed_run):
    client = staff_client()
    assert client.get(reverse("admin:s3tasks_eventrecord_changelist")).status_code == 403
    assert client.get(reverse("admin:s3tasks_handlerrun_changelist")).status_code == 403
    change = reverse("admin:s3tasks_handlerrun_change", args=[failed_run.pk])
    assert client.get(change).status_code == 403


def test_outbox_messages_are_listed_read_only(admin_client):
    message = OutboxMessage.objects.create(
        kind="celery", target="project.demo.tasks.write_import_summary", payload={"args": [1]}
    )
    listing = admin_client.get(reverse("admin:s3tasks_outboxmessage_changelist")).content
    assert b"project.demo.tasks.write_import_summary" in listing
    detail = admin_client.get(
        reverse("admin:s3tasks_outboxmessage_change", args=[message.pk])
    ).content.decode()
    assert "&quot;args&quot;: [" in detail and 'name="_save"' not in detail
    assert admin_client.get(reverse("admin:s3tasks_outboxmessage_add")).status_code == 403


def test_every_s3tasks_model_but_inline_and_internal_rows_has_an_admin_page(admin_client):
    """What the admin showed when it registered unregistered models at import time."""
    from django.apps import apps
    from django.contrib import admin

    for model in apps.get_app_config("s3tasks").get_models():
        name = model._meta.model_name
        if name in {"rulesversion", "handlerbinding", "subscription"}:
            assert not admin.site.is_registered(model), name
            continue
        assert admin.site.is_registered(model), name
        url = reverse(f"admin:s3tasks_{name}_changelist")
        assert admin_client.get(url).status_code == 200, name


def test_malformed_messages_have_their_own_read_only_page(admin_client):
    from django.contrib import admin

    from s3tasks.admin.history import MessageFailureAdmin

    assert isinstance(admin.site.get_model_admin(MessageFailure), MessageFailureAdmin)
    failure = MessageFailure.objects.create(
        queue_name="s3tasks-events",
        message_id="msg-7",
        reason="no envelope parser understood the body\nsecond line",
        body_excerpt='{"not": "s3"}',
    )
    MessageFailure.objects.create(queue_name="other-q", message_id="msg-8", reason="empty body")
    url = reverse("admin:s3tasks_messagefailure_changelist")
    found = admin_client.get(url, {"q": "msg-7"}).content.decode()
    assert "msg-7" in found and "no envelope parser understood the body" in found
    assert "second line" not in found and "msg-8" not in found
    by_queue = admin_client.get(url, {"queue_name": "other-q"}).content.decode()
    assert "msg-8" in by_queue and "msg-7" not in by_queue
    detail = admin_client.get(
        reverse("admin:s3tasks_messagefailure_change", args=[failure.pk])
    ).content.decode()
    assert "second line" in detail and "&quot;not&quot;" in detail and 'name="_save"' not in detail
    assert admin_client.get(reverse("admin:s3tasks_messagefailure_add")).status_code == 403
