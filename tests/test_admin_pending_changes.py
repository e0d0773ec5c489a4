"""A bucket's (queue's, topic's) sync status shows edits made since the last sync: each edit
of what sync writes to AWS adds one to `pending_changes` of the row whose sync applies it, the
admin shows "N changes pending — sync to apply", and a successful sync takes off the edits
its plan included (models.drift, provisioning.status)."""

from __future__ import annotations

import re
import warnings

import pytest
from django.db import models
from django.urls import reverse

from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue, Subscription, Topic
from s3tasks.models.config import SyncStatus
from s3tasks.provisioning.service import apply_plan, compute_plan

pytestmark = pytest.mark.django_db

HANDLER = "project.demo.handlers.import_csv"


def synced_bucket(name: str = "photos") -> Bucket:
    return Bucket.objects.create(name=name, last_sync_status=SyncStatus.OK)


def text_of(response) -> str:
    """The page's text without tags (the status is in several spans)."""
    return re.sub(r"<[^>]+>", "", response.content.decode())


def pending(row: models.Model) -> int:
    row.refresh_from_db()
    return row.pending_changes


def add_rule(bucket: Bucket, **fields) -> NotificationRule:
    values = {"events": ["s3:ObjectCreated:*"], "prefix": "raw/", **fields}
    return NotificationRule.objects.create(bucket=bucket, **values)


def test_each_rule_edit_that_sync_applies_counts_on_its_bucket():
    bucket = synced_bucket()
    rule = add_rule(bucket)
    assert pending(bucket) == 1
    rule.save()  # nothing changed
    assert pending(bucket) == 1
    rule.prefix = "originals/"
    rule.events = ["s3:ObjectCreated:Put"]
    rule.save()
    assert pending(bucket) == 2
    rule.name = "a label only"  # not written to AWS
    rule.save()
    assert pending(bucket) == 2
    rule.delete()
    assert pending(bucket) == 3


def test_moving_a_rule_counts_on_both_buckets():
    first, second = synced_bucket("first"), synced_bucket("second")
    rule = add_rule(first)
    rule.bucket = second
    rule.save()
    assert (pending(first), pending(second)) == (2, 1)


def test_bulk_updates_count_only_the_rules_they_change():
    bucket = synced_bucket()
    add_rule(bucket, prefix="a/")
    add_rule(bucket, prefix="b/")
    add_rule(bucket, prefix="c/", enabled=False)
    assert pending(bucket) == 3
    NotificationRule.objects.filter(bucket=bucket).update(enabled=False)
    assert pending(bucket) == 5  # the disabled one did not change
    NotificationRule.objects.filter(bucket=bucket).update(name="renamed")
    assert pending(bucket) == 5


def test_moving_rules_in_bulk_counts_on_the_buckets_they_leave_and_join():
    first, second = synced_bucket("first"), synced_bucket("second")
    add_rule(first, prefix="a/")
    add_rule(first, prefix="b/")
    NotificationRule.objects.filter(bucket=first).update(bucket_id=second.pk)
    assert (pending(first), pending(second)) == (4, 2)
    rules = list(NotificationRule.objects.filter(bucket=second))
    for rule in rules:
        rule.prefix = "c/" + rule.prefix
    NotificationRule.objects.bulk_update(rules, ["prefix"])  # an update with expressions
    assert pending(second) == 4


def test_handler_bindings_change_routing_only_and_are_not_pending_sync():
    bucket = synced_bucket()
    rule = add_rule(bucket)
    before = pending(bucket)
    binding = HandlerBinding.objects.create(rule=rule, handler_name=HANDLER)
    binding.enabled = False
    binding.save()
    binding.delete()
    assert pending(bucket) == before


def test_a_buckets_own_fields_count_and_sync_bookkeeping_does_not():
    bucket = synced_bucket()
    bucket.cors_rules = [{"AllowedMethods": ["PUT"], "AllowedOrigins": ["https://a.example"]}]
    bucket.save()
    assert pending(bucket) == 1
    # What sync writes (status, ARN) goes through the plain queryset update: no change counted.
    models.QuerySet.update(Bucket.objects.filter(pk=bucket.pk), arn="arn:aws:s3:::photos")
    bucket.refresh_from_db()
    bucket.save()
    assert pending(bucket) == 1


def test_queue_topic_and_subscription_edits_count_on_the_queue_and_topic():
    queue = Queue.objects.create(name="work", last_sync_status=SyncStatus.OK)
    topic = Topic.objects.create(name="fanout", last_sync_status=SyncStatus.OK)
    assert (pending(queue), pending(topic)) == (0, 0)  # new rows: "Never synced" says it
    queue.visibility_timeout = 120
    queue.save()
    subscription = Subscription.objects.create(topic=topic, queue=queue)
    assert (pending(queue), pending(topic)) == (2, 1)
    subscription.raw_message_delivery = True
    subscription.save()
    subscription.delete()
    assert (pending(queue), pending(topic)) == (4, 3)


def test_a_bulk_update_to_null_counts_only_rows_that_were_not_null_and_warns_nothing():
    topic = Topic.objects.create(name="fanout-null", last_sync_status=SyncStatus.OK)
    plain, filtered = (Queue.objects.create(name=f"work-{n}") for n in ("plain", "filtered"))
    Subscription.objects.create(topic=topic, queue=plain)  # no filter policy: SQL NULL
    Subscription.objects.create(topic=topic, queue=filtered, filter_policy={"size": [1]})
    before = pending(topic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django 6.1 deprecates `JSONField=None` lookups
        Subscription.objects.filter(topic=topic).update(filter_policy=None)
    assert pending(topic) == before + 1  # only the one that had a policy changed


def test_bucket_list_and_change_page_show_the_pending_changes(admin_client):
    bucket = synced_bucket()
    add_rule(bucket, prefix="a/")
    add_rule(bucket, prefix="b/")
    Bucket.objects.create(name="fresh")  # never synced: its rules are all pending anyway
    add_rule(Bucket.objects.get(name="fresh"))
    listing = text_of(admin_client.get(reverse("admin:s3tasks_bucket_changelist")))
    assert "2 changes pending — sync to apply" in listing
    assert "Never synced" in listing and "1 change pending" not in listing
    change = reverse("admin:s3tasks_bucket_change", args=[bucket.pk])
    assert "2 changes pending — sync to apply" in text_of(admin_client.get(change))


def test_a_failed_sync_stays_visible_beside_the_pending_changes(admin_client):
    bucket = Bucket.objects.create(name="broken", last_sync_status=SyncStatus.FAILED)
    add_rule(bucket)
    listing = text_of(admin_client.get(reverse("admin:s3tasks_bucket_changelist")))
    assert "Failed1 change pending — sync to apply" in listing  # both, one over the other


def test_saving_a_rule_and_disabling_it_in_the_admin_count_as_changes(admin_client):
    bucket = synced_bucket()
    rule = add_rule(bucket)
    HandlerBinding.objects.create(rule=rule, handler_name=HANDLER)
    assert pending(bucket) == 1
    admin_client.post(
        reverse("admin:s3tasks_notificationrule_changelist"),
        {"action": "disable_rules", "_selected_action": [rule.pk]},
    )
    assert pending(bucket) == 2
    listing = text_of(admin_client.get(reverse("admin:s3tasks_bucket_changelist")))
    assert "2 changes pending — sync to apply" in listing


@pytest.mark.integration
def test_a_successful_sync_clears_the_edits_it_planned_and_keeps_later_ones(moto_endpoint):
    bucket = synced_bucket()
    rule = add_rule(bucket)
    assert pending(bucket) == 1
    plan = compute_plan([bucket.name])
    rule.suffix = ".jpg"  # edited while the plan waits for confirmation: not in this plan
    rule.save()
    assert pending(bucket) == 2
    assert apply_plan(plan).ok
    bucket.refresh_from_db()
    assert bucket.last_sync_status == SyncStatus.OK and bucket.pending_changes == 1
    assert apply_plan(compute_plan([bucket.name])).ok
    assert pending(bucket) == 0


@pytest.mark.integration
def test_a_sync_with_nothing_to_do_in_the_admin_still_clears_the_pending_edits(
    admin_client, moto_endpoint
):
    bucket = synced_bucket()
    rule = add_rule(bucket)
    assert apply_plan(compute_plan([bucket.name])).ok
    rule.enabled = False
    rule.save()
    rule.enabled = True
    rule.save()  # back where AWS is: two edits, nothing to apply
    assert pending(bucket) == 2
    response = admin_client.post(
        reverse("admin:s3tasks_bucket_changelist"),
        {"action": "sync_to_aws", "_selected_action": [bucket.pk], "post": "yes"},
        follow=True,
    )
    assert "Nothing to do: AWS already matches." in response.content.decode()
    assert pending(bucket) == 0
    listing = admin_client.get(reverse("admin:s3tasks_bucket_changelist")).content.decode()
    assert "In sync" in listing
