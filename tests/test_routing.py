from __future__ import annotations

import pytest
from django.db.models import QuerySet

from s3tasks.events import S3Event
from s3tasks.models import Bucket, HandlerBinding, NotificationRule, RulesVersion
from s3tasks.rules.routing import BucketIndex, CompiledRule, Route, route, router

pytestmark = pytest.mark.django_db


def event(key, name="ObjectCreated:Put", bucket="media"):
    return S3Event(bucket=bucket, key=key, event_name=name)


def bind(bucket, handler, events=("s3:ObjectCreated:*",), prefix="", suffix="", **rule_kwargs):
    rule = NotificationRule.objects.create(
        bucket=bucket, events=list(events), prefix=prefix, suffix=suffix, **rule_kwargs
    )
    return HandlerBinding.objects.create(rule=rule, handler_name=handler)


@pytest.fixture
def media():
    return Bucket.objects.create(name="media")


def names(routes):
    return sorted(r.handler_name for r in routes)


def test_routes_by_bucket_event_pattern_prefix_and_suffix(media):
    bind(media, "thumbs", prefix="photos/", suffix=".jpg")
    bind(media, "audit", events=["s3:ObjectCreated:*", "s3:ObjectRemoved:*"])
    bind(media, "puts_only", events=["ObjectCreated:Put"])
    bind(Bucket.objects.create(name="other"), "elsewhere")

    assert names(route(event("photos/cat.jpg"))) == ["audit", "puts_only", "thumbs"]
    assert names(route(event("photos/cat.png"))) == ["audit", "puts_only"]
    assert names(route(event("photos/cat.jpg", "ObjectCreated:Copy"))) == ["audit", "thumbs"]
    assert names(route(event("photos/cat.jpg", "ObjectRemoved:Delete"))) == ["audit"]
    assert route(event("x", bucket="unknown-bucket")) == []


def test_disabled_rules_and_bindings_do_not_route(media):
    bind(media, "off_rule", enabled=False)
    binding = bind(media, "off_binding")
    binding.enabled = False
    binding.save()
    bind(media, "on")
    assert names(route(event("a.txt"))) == ["on"]


def test_handler_matched_by_two_rules_runs_once(media):
    bind(media, "same", prefix="a/")
    bind(media, "same", prefix="a/b/")
    assert names(route(event("a/b/c"))) == ["same"]


def test_route_names_its_rule_binding_and_celery_queue(media):
    rule = NotificationRule.objects.create(bucket=media, events=["s3:ObjectCreated:*"])
    binding = HandlerBinding.objects.create(rule=rule, handler_name="h", celery_queue="heavy")
    (found,) = route(event("k"))
    assert found == Route("h", rule.pk, binding.pk, "heavy")


def test_local_edit_is_seen_immediately(media):
    binding = bind(media, "h")
    assert names(route(event("k"))) == ["h"]
    binding.rule.prefix = "only/"
    binding.rule.save()
    assert route(event("k")) == []


def test_edit_by_another_process_is_seen_once_the_version_changes(media, settings):
    settings.S3TASKS = {**settings.S3TASKS, "RULES_CHECK_INTERVAL": 0}
    bind(media, "h")
    assert names(route(event("k"))) == ["h"]
    # Another process changes the rule (no signal reaches this process), then bumps the version.
    QuerySet.update(NotificationRule.objects.all(), prefix="only/")
    assert names(route(event("k"))) == ["h"], "cached until the version changes"
    RulesVersion.objects.update_or_create(pk=1, defaults={"version": 999})
    assert route(event("k")) == []


def test_cache_is_not_reloaded_within_the_check_interval(
    media, settings, django_assert_num_queries
):
    settings.S3TASKS = {**settings.S3TASKS, "RULES_CHECK_INTERVAL": 60}
    bind(media, "h")
    route(event("k"))
    with django_assert_num_queries(0):
        for _ in range(100):
            route(event("k"))


def test_bulk_update_bumps_rules_version(media, django_capture_on_commit_callbacks):
    bind(media, "h")
    before = RulesVersion.current()
    with django_capture_on_commit_callbacks(execute=True):
        NotificationRule.objects.filter(bucket=media).update(enabled=False)
    assert RulesVersion.current() > before
    assert route(event("k")) == []


def test_bucket_index_tries_each_distinct_prefix_length_once():
    rules = [
        CompiledRule(("ObjectCreated:*",), f"p{i}/", "", (Route(f"h{i}"),)) for i in range(1000)
    ]
    index = BucketIndex(rules)
    assert index.lengths == (3, 4, 5)
    assert [r.handler_name for r in index.match("ObjectCreated:Put", "p42/x")] == ["h42"]


@pytest.fixture(autouse=True)
def fresh_router():
    router.invalidate()
    yield
    router.invalidate()
