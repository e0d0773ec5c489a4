from __future__ import annotations

import pytest

from s3tasks.code_bindings import sync_code_bindings
from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue
from s3tasks.registry import HandlerRegistry, on_s3_event

pytestmark = pytest.mark.django_db


def declare(registry, **kwargs):
    @on_s3_event(registry=registry, name="tests.code.handler", **kwargs)
    def handler(event):
        pass

    return handler


def test_code_binding_becomes_rule_and_binding_marked_as_declared_in_code():
    registry = HandlerRegistry()
    declare(registry, bucket="photos", prefix="raw/", suffix=".jpg")
    sync_code_bindings(registry)
    rule = NotificationRule.objects.get(bucket__name="photos")
    assert rule.declared_in_code and rule.code_location.startswith(__name__)
    assert rule.events == ["s3:ObjectCreated:*"]
    assert (rule.prefix, rule.suffix) == ("raw/", ".jpg")
    assert rule.queue.name == "s3tasks-events"  # S3TASKS["DEFAULT_QUEUE"]
    binding = HandlerBinding.objects.get(rule=rule)
    assert binding.handler_name == "tests.code.handler" and binding.declared_in_code


def test_sync_is_idempotent():
    registry = HandlerRegistry()
    declare(registry, bucket="photos")
    first = sync_code_bindings(registry)
    second = sync_code_bindings(registry)
    assert (first.created, second.created, second.updated, second.removed) == (1, 0, 0, 0)
    assert NotificationRule.objects.count() == 1


def test_changed_declaration_replaces_the_old_row():
    old = HandlerRegistry()
    declare(old, bucket="photos", prefix="raw/")
    sync_code_bindings(old)
    new = HandlerRegistry()
    declare(new, bucket="photos", prefix="incoming/", queue="photo-events")
    result = sync_code_bindings(new)
    (rule,) = NotificationRule.objects.all()
    assert rule.prefix == "incoming/" and rule.queue.name == "photo-events"
    assert (result.created, result.removed) == (1, 1)


def test_removed_declaration_removes_rows_but_keeps_admin_rules():
    registry = HandlerRegistry()
    declare(registry, bucket="photos")
    sync_code_bindings(registry)
    admin_rule = NotificationRule.objects.create(
        bucket=Bucket.objects.get(name="photos"), events=["s3:ObjectRemoved:*"]
    )
    sync_code_bindings(HandlerRegistry())
    assert list(NotificationRule.objects.all()) == [admin_rule]


def test_topic_destination_creates_topic_row():
    registry = HandlerRegistry()
    declare(registry, bucket="photos", topic="photo-fanout")
    sync_code_bindings(registry)
    rule = NotificationRule.objects.get()
    assert rule.topic.name == "photo-fanout" and rule.queue is None


def test_explicit_queue_destination_creates_queue_row():
    registry = HandlerRegistry()
    declare(registry, bucket="photos", queue="photo-events")
    sync_code_bindings(registry)
    assert NotificationRule.objects.get().queue == Queue.objects.get(name="photo-events")
