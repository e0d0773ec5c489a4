"""Admin pages for history (events, runs, outbox, malformed messages): view-only,
searchable, filterable; the retry action and the "send test event" page, which need the
custom permission `s3tasks.run_handlers`, including permission denials."""

from __future__ import annotations

from functools import partial

import pytest
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
from s3tasks.text import duration_text
from tests.admin_support import login_staff
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
        # Worker heartbeats are shown on the operations dashboard, not on a page of their own.
        if name in {"rulesversion", "handlerbinding", "subscription", "workerheartbeat"}:
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


# --- durations, the run list's cells, runs by rule, coloured test-event messages ------------


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [
        (None, "—"),
        (0.2, "< 1 ms"),
        (209.909, "210 ms"),
        (999.6, "1 s"),
        (1500, "1.5 s"),
        (12_345, "12.3 s"),
        (60_000, "1 min"),
        (123_000, "2 min 3 s"),
        (3_600_000, "1 h"),
        (7_380_000, "2 h 3 min"),
    ],
)
def test_durations_are_said_the_way_people_read_them(milliseconds, text):
    assert duration_text(milliseconds) == text


def test_run_list_and_page_show_humanized_durations_with_the_exact_value_on_hover(
    admin_client, failed_run
):
    HandlerRun.objects.filter(pk=failed_run.pk).update(duration_ms=209.909)
    HandlerRun.objects.filter(handler_name=STEADY).update(duration_ms=123_000)
    listing = admin_client.get(reverse("admin:s3tasks_handlerrun_changelist")).content.decode()
    assert '<span title="209.909 ms">210 ms</span>' in listing
    assert "2 min 3 s" in listing
    page = admin_client.get(reverse("admin:s3tasks_handlerrun_change", args=[failed_run.pk]))
    assert '<span title="209.909 ms">210 ms</span>' in page.content.decode()
    event = reverse("admin:s3tasks_eventrecord_change", args=[failed_run.event_id])
    assert '<span title="209.909 ms">210 ms</span>' in admin_client.get(event).content.decode()


def test_run_list_clips_long_keys_and_errors_keeping_the_whole_text_in_a_title(
    admin_client, bound_bucket
):
    key = "in/" + "deeply/nested/folder/" * 6 + "the file.csv"
    dispatch_event(make_event(key, bucket="reports"))
    listing = admin_client.get(reverse("admin:s3tasks_handlerrun_changelist")).content.decode()
    assert f'<span title="s3://reports/{key}">…' in listing
    assert "the file.csv</span>" in listing
    error = HandlerRun.objects.get(handler_name=FLAKY).error.splitlines()[0]
    assert len(error) > 80
    assert f'<span title="{error}">{error[:79]}…</span>' in listing


def test_run_list_shows_attempts_beside_the_state_once_a_run_was_retried(admin_client, failed_run):
    retry(admin_client, [failed_run])
    listing = admin_client.get(reverse("admin:s3tasks_handlerrun_changelist")).content.decode()
    assert "2 attempts" in listing


def test_runs_filtered_by_rule_are_those_its_filters_route_to_its_handlers(admin_client):
    with_rules = Bucket.objects.create(name="reports")
    csv_rule = NotificationRule.objects.create(
        bucket=with_rules, events=["s3:ObjectCreated:*"], prefix="in/", suffix=".csv"
    )
    HandlerBinding.objects.create(rule=csv_rule, handler_name=STEADY)
    removals = NotificationRule.objects.create(
        bucket=with_rules, events=["s3:ObjectRemoved:Delete"], prefix="in/"
    )
    HandlerBinding.objects.create(rule=removals, handler_name=STEADY)
    record = partial(EventRecord.objects.create, bucket="reports", source=EventSource.S3)
    routed = [
        record(dedup_key="1", key="in/a.csv", event_name="ObjectCreated:Put"),
        record(dedup_key="2", key="in/b.csv", event_name="ObjectCreated:Post"),
    ]
    others = [
        record(dedup_key="3", key="in/a.txt", event_name="ObjectCreated:Put"),  # suffix
        record(dedup_key="4", key="out/a.csv", event_name="ObjectCreated:Put"),  # prefix
        record(dedup_key="5", key="in/a.csv", event_name="ObjectRemoved:Delete"),  # event
        EventRecord.objects.create(  # another bucket
            dedup_key="6", bucket="other", key="in/a.csv", event_name="ObjectCreated:Put"
        ),
    ]
    for event in [*routed, *others]:
        HandlerRun.objects.create(event=event, handler_name=STEADY)
    HandlerRun.objects.create(event=routed[0], handler_name=FLAKY)  # not bound to the rule
    url = reverse("admin:s3tasks_handlerrun_changelist")
    found = admin_client.get(url, {"rule": csv_rule.pk}).context["cl"].result_list
    assert {(run.event.key, run.handler_name) for run in found} == {
        ("in/a.csv", STEADY),
        ("in/b.csv", STEADY),
    }
    removed = admin_client.get(url, {"rule": removals.pk}).context["cl"].result_list
    assert [run.event.dedup_key for run in removed] == ["5"]
    assert admin_client.get(url, {"rule": 999_999}).context["cl"].result_count == 0


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def test_send_test_event_reports_success_in_the_success_colour(admin_client, bound_bucket):
    BROKEN["on"] = False
    response = admin_client.post(
        reverse("admin:s3tasks_send_test_event"),
        {"bucket": "reports", "key": "in/x.csv", "event_name": "ObjectCreated:Put"},
    )
    assert messages_of(response) == [
        ("success", "Test event s3:ObjectCreated:Put on s3://reports/in/x.csv sent to 2 handlers.")
    ]
    html = response.content.decode()
    assert '<li class="success">Test event' in html
    assert '<td class="run-state run-succeeded">succeeded</td>' in html


def test_send_test_event_reports_a_failing_handler_in_the_error_colour(admin_client, bound_bucket):
    response = admin_client.post(
        reverse("admin:s3tasks_send_test_event"),
        {"bucket": "reports", "key": "in/x.csv", "event_name": "ObjectCreated:Put"},
    )
    assert messages_of(response) == [
        (
            "error",
            "Test event s3:ObjectCreated:Put on s3://reports/in/x.csv: 1 of 2 handlers failed.",
        )
    ]
    assert '<li class="error">Test event' in response.content.decode()


def test_send_test_event_that_no_rule_matches_is_a_warning(admin_client, bound_bucket):
    response = admin_client.post(
        reverse("admin:s3tasks_send_test_event"),
        {"bucket": "reports", "key": "out/x.csv", "event_name": "ObjectCreated:Put"},
    )
    assert messages_of(response) == [
        ("warning", "Test event s3:ObjectCreated:Put on s3://reports/out/x.csv: no rule matched.")
    ]


def test_messages_never_capitalise_a_handler_name(admin_client, failed_run):
    """The admin capitalises a message's first letter: a handler name must not come first."""
    html = retry(admin_client, [failed_run]).content.decode()
    assert f"The retry of {FLAKY} failed again: " in html
    assert FLAKY.capitalize() not in html
