"""`s3tasks.testing`, the helpers users test their handlers with: payload builders that
s3tasks' own parser reads back exactly, `deliver()` through routing and exactly-once
dispatch, captured follow-up commands, and the pytest plugin's fixtures."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import transaction
from django.test import TestCase

import s3tasks.testing
from s3tasks import EnqueueTask, PublishSQS, S3Event, enqueue, parse_events
from s3tasks.envelopes import parse_message
from s3tasks.events import EventSource
from s3tasks.followups import outbox
from s3tasks.models import Bucket, HandlerBinding, NotificationRule, OutboxMessage, RunState
from s3tasks.processing.messages import Status
from s3tasks.rules.registry import s3_handler
from s3tasks.testing import (
    EVENTBRIDGE_EVENT_NAMES,
    captured_followups,
    deliver,
    eventbridge_event,
    lambda_sns_event,
    lambda_sqs_event,
    make_s3_event,
    s3_notification,
    s3_record,
    s3_test_event,
    sns_envelope,
    sqs_message,
)

pytest_plugins = ["pytester"]

BUCKET = "testing-helpers"
IMPORT = "tests.testing.import_file"
NOTIFY = "tests.testing.notify"
FAIL = "tests.testing.fail"
FOLLOWUP_TASK = "tests.testing.summarise"
CALLS: list[tuple[str, str]] = []


@s3_handler(name=IMPORT)
def import_file(event: S3Event) -> dict:
    CALLS.append((IMPORT, event.key))
    enqueue(FOLLOWUP_TASK, event.bucket, event.key)
    return {"imported": event.key}


@s3_handler(name=NOTIFY)
def notify(event: S3Event) -> list:
    CALLS.append((NOTIFY, event.key))
    return [PublishSQS("testing-notifications", {"key": event.key})]


@s3_handler(name=FAIL, max_retries=0)
def fail(event: S3Event) -> None:
    CALLS.append((FAIL, event.key))
    enqueue(FOLLOWUP_TASK, event.bucket, event.key)  # rolled back with the failure
    raise RuntimeError(f"cannot read {event.key}")


def bind(prefix: str, *handler_names: str, bucket: str = BUCKET) -> NotificationRule:
    found, _ = Bucket.objects.get_or_create(name=bucket)
    rule = NotificationRule.objects.create(
        bucket=found, events=["s3:ObjectCreated:*"], prefix=prefix
    )
    for name in handler_names:
        HandlerBinding.objects.create(rule=rule, handler_name=name)
    return rule


@pytest.fixture
def rules(db):
    """`in/` runs the import and the notify handler, `bad/` the failing one, `later/` a
    handler this process does not have."""
    CALLS.clear()
    bind("in/", IMPORT, NOTIFY)
    bind("bad/", FAIL)
    bind("later/", "tests.testing.not_in_this_release")
    yield
    CALLS.clear()


# --- payloads: what AWS sends, read back by s3tasks' own parser ------------------------------

AWKWARD_KEYS = [
    ("in/red flower.csv", "in/red+flower.csv"),
    ("in/a+b.txt", "in/a%2Bb.txt"),
    ("in/100%.txt", "in/100%25.txt"),
    ("in/café/日本.txt", "in/caf%C3%A9/%E6%97%A5%E6%9C%AC.txt"),
    ("in/a//b/", "in/a//b/"),
    ("in/" + "k" * 1021, "in/" + "k" * 1021),
]


@pytest.mark.parametrize(("key", "encoded"), AWKWARD_KEYS)
def test_make_s3_event_encodes_the_key_as_s3_does_and_the_parser_decodes_it_back(key, encoded):
    event = make_s3_event(BUCKET, key)
    assert event.raw["s3"]["object"]["key"] == encoded
    assert event.key == key and event.source == EventSource.S3


def test_make_s3_event_carries_every_field_it_is_given():
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    event = make_s3_event(
        BUCKET,
        "in/x.csv",
        event_name="s3:ObjectCreated:CompleteMultipartUpload",
        size=12,
        etag="abc-2",
        version_id="v1",
        sequencer="00A1",
        event_time=when,
        region="eu-west-1",
    )
    assert (event.bucket, event.event_name, event.size, event.etag) == (
        BUCKET,
        "ObjectCreated:CompleteMultipartUpload",
        12,
        "abc-2",
    )
    assert (event.version_id, event.sequencer, event.event_time, event.region) == (
        "v1",
        "00A1",
        when,
        "eu-west-1",
    )
    assert event.raw["eventTime"] == "2026-01-02T03:04:05.678Z"


def test_by_default_an_object_is_empty_and_a_removal_has_neither_size_nor_etag():
    created = make_s3_event(BUCKET, "in/x.csv")
    assert (created.size, created.etag) == (0, "d41d8cd98f00b204e9800998ecf8427e")
    removed = s3_record(BUCKET, "in/x.csv", event_name="ObjectRemoved:Delete")
    assert set(removed["s3"]["object"]) == {"key", "sequencer"}


def test_each_call_is_a_new_change_with_a_greater_sequencer():
    first, second = make_s3_event(BUCKET, "in/x.csv"), make_s3_event(BUCKET, "in/x.csv")
    assert int(second.sequencer, 16) > int(first.sequencer, 16)
    assert first.dedup_key != second.dedup_key


@pytest.mark.parametrize("name", ["ObjectCreated:*", "s3:ObjectRemoved:*", "Created", ""])
def test_names_s3_never_sends_are_refused(name):
    with pytest.raises(ValueError, match="not an event S3 sends"):
        make_s3_event(BUCKET, "k", event_name=name)


def test_s3_notification_holds_every_record_given_as_dicts_or_events():
    body = s3_notification(make_s3_event(BUCKET, "in/a b.csv"), s3_record(BUCKET, "in/c.csv"))
    assert [e.key for e in parse_events(json.dumps(body))] == ["in/a b.csv", "in/c.csv"]
    with pytest.raises(ValueError, match="no S3 notification record"):
        s3_notification(S3Event(bucket=BUCKET, key="k", event_name="ObjectCreated:Put"))


def test_sns_envelope_is_parsed_as_an_s3_notification_via_sns():
    body = sns_envelope(s3_notification(s3_record(BUCKET, "in/a b.csv")), topic="uploads")
    parsed = parse_message(json.dumps(body))
    assert parsed.kind == "sns_notification"
    [event] = parsed.events
    assert (event.key, event.source) == ("in/a b.csv", EventSource.SNS)
    assert body["TopicArn"].endswith(":uploads") and isinstance(body["Message"], str)


def test_lambda_sns_event_is_parsed_with_all_its_records():
    event = lambda_sns_event(
        sns_envelope(s3_notification(s3_record(BUCKET, "in/1.csv"))),
        sns_envelope(s3_notification(s3_record(BUCKET, "in/2.csv"))),
    )
    parsed = parse_message(event)
    assert parsed.kind == "lambda_sns" and [e.key for e in parsed.events] == [
        "in/1.csv",
        "in/2.csv",
    ]


def test_lambda_sqs_event_carries_any_body_s3tasks_reads():
    event = lambda_sqs_event(
        sqs_message(s3_notification(s3_record(BUCKET, "in/direct.csv")), receive_count=3),
        sqs_message(sns_envelope(s3_notification(s3_record(BUCKET, "in/via sns.csv")))),
        sqs_message(eventbridge_event(BUCKET, "in/bridged.csv")),
        sqs_message(s3_test_event(BUCKET)),
    )
    parsed = parse_message(event)
    assert parsed.kind == "lambda_sqs" and not parsed.is_test_event
    assert [e.key for e in parsed.events] == ["in/direct.csv", "in/via sns.csv", "in/bridged.csv"]
    assert event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "3"


@pytest.mark.parametrize("name", EVENTBRIDGE_EVENT_NAMES)
def test_eventbridge_event_maps_back_to_its_s3_event_name(name):
    [event] = parse_events(eventbridge_event(BUCKET, "in/a b.csv", event_name=name, size=5))
    assert (event.event_name, event.key, event.source) == (name, "in/a b.csv", "eventbridge")


def test_eventbridge_keys_are_written_as_the_eventbridge_keys_setting_reads_them(settings):
    assert eventbridge_event(BUCKET, "in/a b.csv")["detail"]["object"]["key"] == "in/a b.csv"
    settings.S3TASKS = {**settings.S3TASKS, "EVENTBRIDGE_KEYS": "url-encoded"}
    body = eventbridge_event(BUCKET, "in/a b+c.csv")
    assert body["detail"]["object"]["key"] == "in/a+b%2Bc.csv"
    assert parse_events(body)[0].key == "in/a b+c.csv"


def test_eventbridge_refuses_names_it_has_no_event_for():
    with pytest.raises(ValueError, match="EventBridge carries no"):
        eventbridge_event(BUCKET, "k", event_name="ReducedRedundancyLostObject")


def test_s3_test_event_is_a_test_event_without_events():
    parsed = parse_message(s3_test_event(BUCKET))
    assert parsed.is_test_event and parsed.events == ()


# --- deliver(): routing and exactly-once dispatch, synchronously -------------------------------


def test_deliver_runs_every_routed_handler_once_and_reports_what_it_did(rules):
    delivery = deliver(make_s3_event(BUCKET, "in/a b.csv"))
    assert delivery.status == Status.HANDLED and delivery.ok
    assert sorted(delivery.handlers_run) == [IMPORT, NOTIFY]
    assert sorted(CALLS) == [(IMPORT, "in/a b.csv"), (NOTIFY, "in/a b.csv")]
    run = delivery.run_of(IMPORT)
    assert run.ran and run.succeeded and run.state == RunState.SUCCEEDED and run.attempts == 1
    assert run.result == {"imported": "in/a b.csv"}
    assert run.result_summary == '{"imported": "in/a b.csv"}'


def test_delivering_the_same_event_again_runs_nothing(rules):
    event = make_s3_event(BUCKET, "in/once.csv")
    deliver(event)
    again = deliver(s3_notification(event))
    assert again.handlers_run == [] and all(run.skipped for run in again.runs)
    assert again.status == Status.HANDLED and again.followups == ()
    assert len(CALLS) == 2


def test_an_event_twice_in_one_delivery_runs_once(rules):
    event = make_s3_event(BUCKET, "in/twice.csv")
    delivery = deliver([event, event])
    assert [
        (r.handler_name, r.ran, r.skipped) for r in delivery.runs if r.handler_name == IMPORT
    ] == [
        (IMPORT, True, False),
        (IMPORT, False, True),
    ]
    assert CALLS.count((IMPORT, "in/twice.csv")) == 1


def test_deliver_reads_any_envelope_body(rules):
    body = sns_envelope(
        s3_notification(s3_record(BUCKET, "in/1.csv"), s3_record(BUCKET, "in/2.csv"))
    )
    delivery = deliver(json.dumps(body), message_id="m-1", queue_name="s3tasks-events")
    assert [e.key for e in delivery.events] == ["in/1.csv", "in/2.csv"]
    assert len(delivery.handlers_run) == 4


def test_a_test_event_is_acknowledged_and_runs_nothing(rules):
    delivery = deliver(sqs_message(s3_test_event(BUCKET))["body"])
    assert delivery.is_test_event and delivery.status == Status.TEST_EVENT and delivery.ok
    assert delivery.runs == () and CALLS == []


def test_an_event_no_rule_matches_runs_nothing_and_is_handled(rules):
    delivery = deliver(make_s3_event(BUCKET, "elsewhere/x.csv"))
    assert delivery.runs == () and delivery.status == Status.HANDLED


def test_a_failing_handler_reports_its_exception_and_loses_its_followups(rules):
    delivery = deliver(make_s3_event(BUCKET, "bad/x.csv"))
    run = delivery.run_of(FAIL)
    assert run.ran and run.state == RunState.FAILED and not run.succeeded
    assert isinstance(run.exception, RuntimeError) and "cannot read bad/x.csv" in run.error
    assert delivery.errors == {FAIL: "RuntimeError: cannot read bad/x.csv"}
    assert delivery.status == Status.FAILED_PERMANENTLY and not delivery.ok
    assert delivery.followups == () and not OutboxMessage.objects.exists()


def test_a_handler_this_process_lacks_is_deferred(rules):
    delivery = deliver(make_s3_event(BUCKET, "later/x.csv"))
    [run] = delivery.runs
    assert run.deferred and not run.ran and delivery.status == Status.DEFERRED


def test_rules_a_test_rolled_back_are_no_longer_routed_to(db):
    CALLS.clear()
    with transaction.atomic():
        bind("in/", IMPORT)
        assert deliver(make_s3_event(BUCKET, "in/a.csv")).handlers_run == [IMPORT]
        transaction.set_rollback(True)
    assert deliver(make_s3_event(BUCKET, "in/b.csv")).runs == ()


def test_deliver_refuses_an_unknown_dispatch_mode_and_non_events(db):
    with pytest.raises(ValueError, match="dispatch must be"):
        deliver(make_s3_event(BUCKET, "in/x.csv"), dispatch="threads")
    with pytest.raises(TypeError, match="S3Event"):
        deliver([{"Records": []}])


def test_run_of_names_the_handlers_that_were_routed_to(rules):
    delivery = deliver(make_s3_event(BUCKET, "in/x.csv"))
    with pytest.raises(LookupError, match=f"routed to: {IMPORT}, {NOTIFY}"):
        delivery.run_of("tests.testing.nobody")


def test_celery_mode_runs_eager_tasks_inside_the_tests_transaction(rules, settings):
    assert settings.CELERY_TASK_ALWAYS_EAGER
    delivery = deliver(make_s3_event(BUCKET, "in/celery.csv"), dispatch="celery")
    run = delivery.run_of(IMPORT)
    assert run.ran and run.state == RunState.SUCCEEDED
    assert delivery.followups == (
        EnqueueTask(FOLLOWUP_TASK, (BUCKET, "in/celery.csv")),
        PublishSQS("testing-notifications", {"key": "in/celery.csv"}),
    )


@pytest.mark.parametrize("mode", ["inline", "celery"])
def test_a_failing_handler_is_reported_as_having_run_in_either_mode(rules, mode):
    run = deliver(make_s3_event(BUCKET, "bad/x.csv"), dispatch=mode).run_of(FAIL)
    assert run.ran and not run.skipped and run.state == RunState.FAILED
    assert run.error == "RuntimeError: cannot read bad/x.csv"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["inline", "celery"])
def test_outside_a_test_transaction_deliver_commits_and_still_sends_no_followup(
    rules, monkeypatch, mode
):
    sent: list[list[int]] = []
    monkeypatch.setattr(outbox, "relay_messages", lambda ids: sent.append(ids) or 0)
    delivery = deliver(make_s3_event(BUCKET, "in/committed.csv"), dispatch=mode)
    assert sorted(delivery.handlers_run) == [IMPORT, NOTIFY]
    assert delivery.run_of(IMPORT).state == RunState.SUCCEEDED and len(delivery.followups) == 2
    assert sent == [] and OutboxMessage.objects.filter(sent_at__isnull=True).count() == 2
    assert deliver(make_s3_event(BUCKET, "bad/x.csv"), dispatch=mode).run_of(FAIL).ran


# --- follow-up commands: captured, not sent ---------------------------------------------------


def test_deliver_lists_the_followups_and_sends_none(rules, monkeypatch):
    sent: list[list[int]] = []
    monkeypatch.setattr(outbox, "relay_messages", lambda ids: sent.append(ids) or 0)
    delivery = deliver(make_s3_event(BUCKET, "in/a b.csv"))
    assert delivery.followups == (  # in the order the handlers ran
        EnqueueTask(FOLLOWUP_TASK, (BUCKET, "in/a b.csv")),
        PublishSQS("testing-notifications", {"key": "in/a b.csv"}),
    )
    assert sent == [] and OutboxMessage.objects.filter(sent_at__isnull=True).count() == 2


def test_send_followups_relays_them_as_the_workers_commit_would(rules, monkeypatch):
    sent: list[list[int]] = []
    monkeypatch.setattr(outbox, "relay_messages", lambda ids: sent.append(ids) or 0)
    delivery = deliver(make_s3_event(BUCKET, "in/a.csv"), send_followups=True)
    assert len(delivery.followups) == 2
    assert sorted(pk for ids in sent for pk in ids) == sorted(
        OutboxMessage.objects.values_list("pk", flat=True)
    )


def test_captured_followups_records_commands_issued_anywhere_in_the_block(
    db, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[list[int]] = []
    monkeypatch.setattr(outbox, "relay_messages", lambda ids: sent.append(ids) or 0)
    with captured_followups() as outer:
        enqueue(FOLLOWUP_TASK, "direct")
        with captured_followups() as inner:
            PublishSQS("q", "text").submit()
        with transaction.atomic():
            enqueue(FOLLOWUP_TASK, "rolled back")
            transaction.set_rollback(True)
    assert outer.commands == [EnqueueTask(FOLLOWUP_TASK, ("direct",)), PublishSQS("q", "text")]
    assert list(inner) == [PublishSQS("q", "text")] and len(outer) == 2
    assert sent == []
    with django_capture_on_commit_callbacks(execute=True):
        enqueue(FOLLOWUP_TASK, "after the block")  # relayed as usual again
    assert len(sent) == 1


class DeliverInADjangoTestCase(TestCase):
    """What docs/testing.md shows for `django.test.TestCase` users."""

    @classmethod
    def setUpTestData(cls) -> None:
        bind("in/", IMPORT)

    def test_deliver_and_captured_followups_work_in_a_test_case(self) -> None:
        CALLS.clear()
        with captured_followups() as followups:
            delivery = deliver(make_s3_event(BUCKET, "in/red flower.csv"))
        self.assertEqual(delivery.handlers_run, [IMPORT])
        self.assertEqual(
            followups.commands, [EnqueueTask(FOLLOWUP_TASK, (BUCKET, "in/red flower.csv"))]
        )
        self.assertEqual(list(delivery.followups), followups.commands)


# --- the public surface and the pytest plugin ---------------------------------------------


def test_the_lazy_exports_all_and_type_checking_imports_name_the_same_things():
    tree = ast.parse(Path(s3tasks.testing.__file__).read_text())
    [checking] = [n for n in tree.body if isinstance(n, ast.If)]
    imported = {alias.name for stmt in checking.body for alias in stmt.names}
    assert s3tasks.testing.__all__ == sorted(s3tasks.testing._EXPORTS) and imported == set(
        s3tasks.testing.__all__
    )
    submodules = {m.name for m in pkgutil.iter_modules(s3tasks.testing.__path__)}
    assert not submodules & set(s3tasks.testing.__all__)
    for name, module in s3tasks.testing._EXPORTS.items():
        assert getattr(s3tasks.testing, name) is getattr(importlib.import_module(module), name)


def test_the_fixtures_build_deliver_and_capture(
    rules, s3tasks_event_factory, s3tasks_deliver, s3tasks_followups
):
    event = s3tasks_event_factory(BUCKET, "in/fixture.csv")
    assert s3tasks_deliver(event).run_of(IMPORT).ran
    assert EnqueueTask(FOLLOWUP_TASK, (BUCKET, "in/fixture.csv")) in s3tasks_followups.commands


def test_the_plugin_loads_without_django_and_offers_its_fixtures(pytester, monkeypatch):
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    pytester.makepyfile(
        """
        import sys

        def test_events_need_no_django_setup(s3tasks_event_factory):
            assert s3tasks_event_factory("some-bucket", "a b+c.txt").key == "a b+c.txt"
            assert "s3tasks.models" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:django", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    fixtures = pytester.runpytest_subprocess("-p", "no:django", "--fixtures")
    fixtures.stdout.fnmatch_lines(
        ["*s3tasks_event_factory*", "*s3tasks_deliver*", "*s3tasks_followups*"]
    )
