from __future__ import annotations

import pytest
from django.core.checks import Warning as CheckWarning
from django.core.management import call_command

from s3tasks import checks
from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue
from s3tasks.rules.registry import default_registry, on_s3_event, s3_handler


@pytest.fixture
def temporary_handlers():
    before = set(default_registry.names())
    yield
    for name in set(default_registry.names()) - before:
        default_registry.remove(name)


def ids(messages):
    return [m.id for m in messages]


def test_invalid_settings_are_reported_as_e001_with_a_hint(settings):
    settings.S3TASKS = {"DISPATCH": "sometimes"}
    (message,) = checks.check_settings()
    assert message.id == "s3tasks.E001"
    assert "DISPATCH" in message.msg and "docs/configuration.md" in message.hint


def test_unregistered_batch_handler_is_e003(settings):
    settings.S3TASKS = {**settings.S3TASKS, "BATCH_HANDLER": "nope.handler"}
    assert ids(checks.check_settings()) == ["s3tasks.E003"]


def test_handler_writing_where_it_listens_warns_w001(temporary_handlers):
    @on_s3_event("loop-bucket", prefix="in/", writes_to=["loop-bucket/in/out/"], name="t.loop")
    def loops(event):
        pass

    @on_s3_event("safe-bucket", prefix="in/", writes_to=["safe-bucket/out/"], name="t.safe")
    def safe(event):
        pass

    messages = checks.check_handler_loops()
    assert ids(messages) == ["s3tasks.W001"]
    assert "t.loop" in messages[0].msg and "forever" in messages[0].msg


def test_overlapping_code_bindings_to_different_destinations_are_e002(temporary_handlers):
    @on_s3_event("shared", suffix=".jpg", queue="q1", name="t.jpg")
    def jpg(event):
        pass

    @on_s3_event("shared", suffix="pg", queue="q2", name="t.pg")
    def pg(event):
        pass

    @on_s3_event("shared", suffix=".txt", queue="q1", name="t.same_destination")
    def same(event):
        pass

    messages = checks.check_code_binding_overlaps()
    assert ids(messages) == ["s3tasks.E002"]
    assert "t.jpg" in messages[0].msg and "t.pg" in messages[0].msg


@pytest.mark.django_db
def test_overlapping_database_rules_are_errors_and_unknown_handlers_warnings(temporary_handlers):
    @s3_handler(name="t.known")
    def known(event):
        pass

    bucket = Bucket.objects.create(name="db-bucket")
    q1, q2 = Queue.objects.create(name="dq1"), Queue.objects.create(name="dq2")
    NotificationRule.objects.create(bucket=bucket, events=["s3:ObjectCreated:*"], queue=q1)
    rule = NotificationRule.objects.create(
        bucket=bucket, events=["s3:ObjectCreated:Put"], prefix="x/", queue=q2
    )
    HandlerBinding.objects.create(rule=rule, handler_name="t.known")
    HandlerBinding.objects.create(rule=rule, handler_name="t.unknown")
    messages = checks.check_rule_overlaps(databases=["default"])
    assert sorted(ids(messages)) == ["s3tasks.E002", "s3tasks.W004"]
    (unknown,) = [m for m in messages if m.id == "s3tasks.W004"]
    assert isinstance(unknown, CheckWarning) and "'t.unknown'" in unknown.msg


@pytest.mark.django_db
@pytest.mark.parametrize("databases", [None, [], ["other"]])
def test_rule_checks_query_only_when_asked_to_check_the_rules_database(
    databases, django_assert_num_queries
):
    rule = NotificationRule.objects.create(
        bucket=Bucket.objects.create(name="unchecked"), events=["s3:ObjectCreated:*"]
    )
    HandlerBinding.objects.create(rule=rule, handler_name="t.nobody.registers.this")
    with django_assert_num_queries(0):
        assert checks.check_rule_overlaps(databases=databases) == []
    assert ids(checks.check_rule_overlaps(databases=["default"])) == ["s3tasks.W004"]


def test_the_worker_command_opts_into_the_rule_checks():
    """So W004 (a binding to a handler this release lacks) is printed when a worker starts."""
    from s3tasks.management.commands.sqs_worker import Command

    assert Command().get_check_kwargs({})["databases"] == ["default"]


@pytest.mark.django_db
def test_a_binding_to_a_handler_this_code_lacks_does_not_stop_a_command(capsys):
    """A newer release's binding must not stop an older release's worker from starting."""
    rule = NotificationRule.objects.create(
        bucket=Bucket.objects.create(name="newer-release"), events=["s3:ObjectRemoved:*"]
    )
    HandlerBinding.objects.create(rule=rule, handler_name="newer.release.record_removed")
    call_command("check", "--database", "default")  # raised SystemCheckError with E004
    assert "s3tasks.W004" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("dispatch", "vendor", "reuse", "warned"),
    [
        ("celery", "postgresql", None, True),
        ("celery", "postgresql", 1000, False),
        ("inline", "postgresql", None, False),  # no Celery task, no connection churn
        ("celery", "sqlite", None, False),  # opening a SQLite file is cheap
    ],
)
def test_celery_mode_that_reopens_a_connection_per_task_is_warned(
    dispatch, vendor, reuse, warned, settings, monkeypatch
):
    from celery import current_app
    from django.db import connection

    settings.S3TASKS = {**settings.S3TASKS, "DISPATCH": dispatch}
    settings.CELERY_DB_REUSE_MAX = reuse
    monkeypatch.setitem(current_app.conf, "CELERY_DB_REUSE_MAX", reuse)
    monkeypatch.setattr(connection, "vendor", vendor)
    found = checks.check_celery_keeps_connections()
    assert ids(found) == (["s3tasks.W011"] if warned else [])
    if warned:
        assert "CELERY_DB_REUSE_MAX = 1000" in found[0].hint
