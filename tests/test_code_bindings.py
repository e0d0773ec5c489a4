"""Code bindings (`@on_s3_event`) mirrored into rule rows: the full reconcile of `migrate` and
`manage.py s3tasks_bindings`, the add-only pass of a starting worker, and what survives a
decorator change."""

from __future__ import annotations

import logging

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue, RulesVersion
from s3tasks.rules import code_bindings
from s3tasks.rules.code_binding_plan import Declaration, free_key
from s3tasks.rules.code_bindings import add_missing_code_bindings, sync_code_bindings
from s3tasks.rules.registry import HandlerRegistry, on_s3_event

pytestmark = pytest.mark.django_db

HANDLER = "tests.code.handler"


def declare(registry, name=HANDLER, **kwargs):
    @on_s3_event(registry=registry, name=name, **kwargs)
    def handler(event):
        pass

    return handler


def release(*declarations: dict) -> HandlerRegistry:
    """A registry holding one handler per dict of `declare` arguments (one release's code)."""
    registry = HandlerRegistry()
    for kwargs in declarations:
        declare(registry, **kwargs)
    return registry


def writes(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


def code_rules() -> dict[str, NotificationRule]:
    rules = NotificationRule.objects.filter(declared_in_code=True, bucket__name="photos")
    return {rule.bindings.get().handler_name: rule for rule in rules}


def test_code_binding_becomes_rule_and_binding_marked_as_declared_in_code():
    declare(registry := HandlerRegistry(), bucket="photos", prefix="raw/", suffix=".jpg")
    sync_code_bindings(registry)
    rule = NotificationRule.objects.get(bucket__name="photos")
    assert rule.declared_in_code and rule.code_location.startswith(__name__)
    assert rule.events == ["s3:ObjectCreated:*"]
    assert (rule.prefix, rule.suffix) == ("raw/", ".jpg")
    assert rule.queue.name == "s3tasks-events"  # S3TASKS["DEFAULT_QUEUE"]
    assert rule.code_key == f"{HANDLER}@photos#1"
    binding = HandlerBinding.objects.get(rule=rule)
    assert binding.handler_name == HANDLER and binding.declared_in_code


def test_a_second_reconcile_writes_nothing_and_does_not_bump_the_rules_version(
    django_capture_on_commit_callbacks,
):
    registry = release({"bucket": "photos"}, {"name": "tests.code.other", "bucket": "photos"})
    with django_capture_on_commit_callbacks(execute=True):
        first = sync_code_bindings(registry)
    version = RulesVersion.current()
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        CaptureQueriesContext(connection) as queries,
    ):
        second = sync_code_bindings(registry)
    assert (first.created, second.created, second.updated, second.removed) == (2, 0, 0, 0)
    assert writes(queries) == [] and callbacks == []
    assert RulesVersion.current() == version
    assert NotificationRule.objects.filter(bucket__name="photos").count() == 2


def test_changed_prefix_updates_the_rule_in_place_and_keeps_what_the_admin_set(
    django_capture_on_commit_callbacks,
):
    sync_code_bindings(release({"bucket": "photos", "prefix": "raw/"}))
    rule = NotificationRule.objects.get(bucket__name="photos")
    NotificationRule.objects.filter(pk=rule.pk).update(enabled=False)  # the admin's Disable
    HandlerBinding.objects.filter(rule=rule).update(enabled=False)

    result = sync_code_bindings(
        release({"bucket": "photos", "prefix": "incoming/", "queue": "photo-events"})
    )

    (updated,) = NotificationRule.objects.filter(bucket__name="photos")
    assert (result.created, result.updated, result.removed) == (0, 1, 0)
    assert updated.pk == rule.pk and updated.code_key == rule.code_key
    assert updated.prefix == "incoming/" and updated.queue.name == "photo-events"
    assert updated.enabled is False  # disabled in the admin: stays disabled
    binding = updated.bindings.get()
    assert binding.enabled is False


def test_changed_celery_queue_and_access_update_only_the_binding():
    sync_code_bindings(release({"bucket": "photos"}))
    before = NotificationRule.objects.get(bucket__name="photos")
    result = sync_code_bindings(release({"bucket": "photos", "celery_queue": "heavy"}))
    after = NotificationRule.objects.get(bucket__name="photos")
    assert result.updated == 1 and after.updated_at == before.updated_at
    assert after.bindings.get().celery_queue == "heavy"


def test_stacked_bindings_on_one_bucket_keep_their_rows_when_one_prefix_changes():
    def stacked(second_prefix: str) -> HandlerRegistry:
        registry = HandlerRegistry()

        @on_s3_event("photos", prefix=second_prefix, registry=registry, name=HANDLER)
        @on_s3_event("photos", prefix="a/", registry=registry, name=HANDLER)
        def handler(event):
            pass

        return registry

    sync_code_bindings(stacked("b/"))
    ids = dict(NotificationRule.objects.values_list("prefix", "pk"))
    NotificationRule.objects.filter(prefix="b/").update(enabled=False)
    result = sync_code_bindings(stacked("c/"))
    assert (result.created, result.updated, result.removed) == (0, 1, 0)
    assert dict(NotificationRule.objects.values_list("prefix", "pk")) == {
        "a/": ids["a/"],
        "c/": ids["b/"],
    }
    assert NotificationRule.objects.get(prefix="c/").enabled is False


def test_rows_keyed_by_the_old_declaration_hash_are_matched_and_keep_their_key():
    """Rows made before identity became (handler, bucket): their key hashed the declaration."""
    sync_code_bindings(release({"bucket": "photos", "prefix": "raw/"}))
    old_key = f"{HANDLER}@0123456789abcdef"
    NotificationRule.objects.filter(bucket__name="photos").update(code_key=old_key, enabled=False)
    result = sync_code_bindings(release({"bucket": "photos", "prefix": "new/"}))
    (rule,) = NotificationRule.objects.filter(bucket__name="photos")
    assert (result.created, result.updated, result.removed) == (0, 1, 0)
    assert (rule.code_key, rule.prefix, rule.enabled) == (old_key, "new/", False)


def test_removed_declaration_removes_rows_but_keeps_admin_rules():
    sync_code_bindings(release({"bucket": "photos"}))
    admin_rule = NotificationRule.objects.create(
        bucket=Bucket.objects.get(name="photos"), events=["s3:ObjectRemoved:*"]
    )
    result = sync_code_bindings(HandlerRegistry())
    assert result.removed >= 1
    assert list(NotificationRule.objects.filter(bucket__name="photos")) == [admin_rule]


def test_a_code_rule_whose_binding_row_is_gone_is_replaced():
    sync_code_bindings(registry := release({"bucket": "photos"}))
    orphan = NotificationRule.objects.get(bucket__name="photos")
    HandlerBinding.objects.filter(rule=orphan).delete()
    result = sync_code_bindings(registry)
    (rule,) = NotificationRule.objects.filter(bucket__name="photos")
    assert (result.created, result.removed) == (1, 1) and rule.pk != orphan.pk
    assert rule.code_key == f"{HANDLER}@photos#2"  # a fresh key: #1 was taken when planned


def test_topic_destination_creates_topic_row():
    sync_code_bindings(release({"bucket": "photos", "topic": "photo-fanout"}))
    rule = NotificationRule.objects.get(bucket__name="photos")
    assert rule.topic.name == "photo-fanout" and rule.queue is None


def test_explicit_queue_destination_creates_queue_row():
    sync_code_bindings(release({"bucket": "photos", "queue": "photo-events"}))
    assert NotificationRule.objects.get(bucket__name="photos").queue == Queue.objects.get(
        name="photo-events"
    )


def test_long_handler_names_get_keys_that_fit_the_column():
    name = "x" * 255
    declaration = Declaration(handler_name=name, bucket="b" * 63, events=("s3:ObjectCreated:*",))
    key = free_key(declaration, taken=set())
    assert len(key) <= 300 and key.endswith("@" + "b" * 63 + "#1")
    assert free_key(declaration, taken={key}).endswith("#2")


# --- a starting worker: add only -----------------------------------------------------------

V1 = ({"bucket": "photos", "prefix": "raw/"}, {"name": "tests.code.archive", "bucket": "photos"})
V2 = (
    {"bucket": "photos", "prefix": "raw/"},
    {"name": "tests.code.archive", "bucket": "photos", "prefix": "2/"},
    {"name": "tests.code.removed", "bucket": "photos", "events": "s3:ObjectRemoved:*"},
)


def test_a_starting_worker_of_the_older_release_deletes_changes_and_enables_nothing(caplog):
    sync_code_bindings(release(*V2))  # the newer release migrated first
    NotificationRule.objects.filter(bucket__name="photos", prefix="2/").update(enabled=False)
    before = {name: (r.pk, r.prefix, r.enabled) for name, r in code_rules().items()}

    with caplog.at_level(logging.INFO, logger="s3tasks"):
        result = add_missing_code_bindings(release(*V1))

    assert {name: (r.pk, r.prefix, r.enabled) for name, r in code_rules().items()} == before
    assert (result.created, result.updated, result.removed) == (0, 0, 0)
    assert (result.not_declared, result.differing) == (1, 1)
    (line,) = [r.getMessage() for r in caplog.records if "left as they are" in r.getMessage()]
    assert "tests.code.removed on photos" in line and "tests.code.archive on photos" in line


def test_a_starting_worker_adds_the_rules_its_code_declares_and_the_database_lacks():
    sync_code_bindings(release(*V1))
    result = add_missing_code_bindings(release(*V2))
    assert (result.created, result.not_declared, result.differing) == (1, 0, 1)
    assert set(code_rules()) == {HANDLER, "tests.code.archive", "tests.code.removed"}
    assert code_rules()["tests.code.archive"].prefix == ""  # differing: left to migrate


def test_a_starting_worker_with_nothing_to_add_writes_nothing(caplog):
    sync_code_bindings(registry := release(*V1))
    with CaptureQueriesContext(connection) as queries, caplog.at_level(logging.INFO):
        result = add_missing_code_bindings(registry)
    assert writes(queries) == [] and result.created == 0
    assert not [r for r in caplog.records if "left as they are" in r.getMessage()]


def test_a_rule_inserted_by_another_worker_meanwhile_is_not_added_twice(monkeypatch):
    registry = release({"bucket": "photos"})
    stale = code_bindings.compute_bindings_plan(registry)  # read before the other one wrote
    add_missing_code_bindings(registry)  # another worker, starting at the same moment
    plans = [stale]
    real_plan = code_bindings.compute_bindings_plan
    monkeypatch.setattr(
        code_bindings,
        "compute_bindings_plan",
        lambda chosen: plans.pop() if plans else real_plan(chosen),
    )
    result = add_missing_code_bindings(registry)  # its insert hits the unique code key
    assert plans == [] and result.created == 0
    assert NotificationRule.objects.filter(bucket__name="photos").count() == 1


# --- manage.py s3tasks_bindings ---------------------------------------------------------------


def test_bindings_command_dry_run_shows_the_plan_changes_nothing_and_exits_2(capsys):
    sync_code_bindings()
    rule = NotificationRule.objects.filter(declared_in_code=True).first()
    NotificationRule.objects.filter(pk=rule.pk).update(prefix="drifted/", enabled=False)
    with pytest.raises(CommandError, match="changes pending") as exit_:
        call_command("s3tasks_bindings", "--dry-run")
    out = capsys.readouterr().out
    assert exit_.value.returncode == 2
    assert "1 to update" in out and f"~ update {rule.bindings.get().handler_name}" in out
    assert f"prefix 'drifted/' -> {rule.prefix!r}" in out
    assert NotificationRule.objects.get(pk=rule.pk).prefix == "drifted/"


def test_bindings_command_applies_the_plan_and_then_has_nothing_to_do(capsys):
    sync_code_bindings()
    rule = NotificationRule.objects.filter(declared_in_code=True).first()
    NotificationRule.objects.filter(pk=rule.pk).update(prefix="drifted/", enabled=False)
    call_command("s3tasks_bindings", "--no-input")
    assert "Applied: 0 created, 1 updated, 0 removed." in capsys.readouterr().out
    restored = NotificationRule.objects.get(pk=rule.pk)
    assert (restored.prefix, restored.enabled) == (rule.prefix, False)
    call_command("s3tasks_bindings", "--dry-run")  # exit 0: in sync
    assert "Nothing to do" not in capsys.readouterr().out
    call_command("s3tasks_bindings")
    assert "Nothing to do: the rules match the code." in capsys.readouterr().out


def test_bindings_command_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        call_command("s3tasks_bindings", "--help")
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--no-input" in out and "exit 2" in out
