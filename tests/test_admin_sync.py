"""The admin's "Sync to AWS" action against moto's HTTP server: plan on a confirmation page,
apply on confirm, status and errors in the bucket list, permission checks."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from s3tasks.aws import client
from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue
from s3tasks.models.config import SyncStatus

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

HANDLER = "project.demo.handlers.import_csv"


@pytest.fixture
def photos(moto_endpoint) -> Bucket:
    bucket = Bucket.objects.create(name="admin-sync-photos")
    rule = NotificationRule.objects.create(
        name="raw photos",
        bucket=bucket,
        events=["s3:ObjectCreated:*"],
        prefix="raw/",
        queue=Queue.objects.create(name="admin-sync-events"),
    )
    HandlerBinding.objects.create(rule=rule, handler_name=HANDLER)
    return bucket


def sync_action(admin_client, buckets, **extra):
    return admin_client.post(
        reverse("admin:s3tasks_bucket_changelist"),
        {"action": "sync_to_aws", "_selected_action": [b.pk for b in buckets], **extra},
        follow=True,
    )


def bucket_names() -> set[str]:
    return {b["Name"] for b in client("s3").list_buckets()["Buckets"]}


def test_sync_action_shows_the_plan_and_changes_nothing_yet(admin_client, photos):
    response = sync_action(admin_client, [photos])
    html = response.content.decode()
    assert response.templates[0].name == "admin/s3tasks/bucket/sync_confirmation.html"
    assert 'id="sync-plan"' in html and "admin-sync-photos" in html
    assert "admin-sync-events" in html
    assert 'value="Apply these changes"' in html
    assert "admin-sync-photos" not in bucket_names()


def test_confirming_applies_the_plan_and_records_the_sync_status(admin_client, photos):
    response = sync_action(admin_client, [photos], post="yes")
    assert "Synced to AWS:" in response.content.decode()
    assert "admin-sync-photos" in bucket_names()
    config = client("s3").get_bucket_notification_configuration(Bucket="admin-sync-photos")
    queue_entries = config.get("QueueConfigurations", [])
    assert [e["QueueArn"].rsplit(":", 1)[-1] for e in queue_entries] == ["admin-sync-events"]
    photos.refresh_from_db()
    assert photos.last_sync_status == SyncStatus.OK and photos.last_synced_at is not None
    listing = admin_client.get(reverse("admin:s3tasks_bucket_changelist")).content.decode()
    assert "In sync" in listing
    again = sync_action(admin_client, [photos]).content.decode()
    assert 'id="sync-plan-empty"' in again  # nothing left to do


def test_overlapping_rules_are_reported_instead_of_a_plan(admin_client, photos):
    rule = NotificationRule.objects.create(
        name="clashing",
        bucket=photos,
        events=["s3:ObjectCreated:Put"],
        prefix="raw/2024/",
        queue=Queue.objects.create(name="admin-sync-other"),
    )
    HandlerBinding.objects.create(rule=rule, handler_name=HANDLER)
    response = sync_action(admin_client, [photos])
    html = response.content.decode()
    assert 'id="sync-plan"' not in html
    assert "overlap" in html.lower()
    assert "admin-sync-photos" not in bucket_names()


def test_sync_needs_change_permission_on_buckets_and_rules(client, django_user_model, photos):
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    for codename in ("view_bucket", "change_bucket"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    page = client.get(reverse("admin:s3tasks_bucket_changelist")).content.decode()
    assert "sync_to_aws" not in page
    sync_action(client, [photos], post="yes")
    assert "admin-sync-photos" not in bucket_names()
    user.user_permissions.add(Permission.objects.get(codename="change_notificationrule"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    page = client.get(reverse("admin:s3tasks_bucket_changelist")).content.decode()
    assert "sync_to_aws" in page
