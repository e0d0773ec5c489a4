"""The admin's "Sync to AWS" action against moto's HTTP server: plan on a confirmation page
(each step marked ours/adopted/foreign), apply on confirm, adoption reviewed before it is
applied, status and errors in the bucket list, permission checks."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from s3tasks.aws import client
from s3tasks.models import Bucket, HandlerBinding, ManagedResource, NotificationRule, Queue
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


def test_sync_needs_the_sync_to_aws_permission_not_edit_permissions(
    client, django_user_model, photos
):
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    for codename in ("view_bucket", "change_bucket", "change_notificationrule"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    page = client.get(reverse("admin:s3tasks_bucket_changelist")).content.decode()
    assert "sync_to_aws" not in page
    sync_action(client, [photos], post="yes")
    assert "admin-sync-photos" not in bucket_names()

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    for codename in ("view_bucket", "sync_to_aws"):
        viewer.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(viewer)
    page = client.get(reverse("admin:s3tasks_bucket_changelist")).content.decode()
    assert "sync_to_aws" in page
    change = client.get(reverse("admin:s3tasks_bucket_change", args=[photos.pk])).content
    assert b'name="_save"' not in change  # the bucket itself stays read-only
    sync_action(client, [photos], post="yes")
    assert "admin-sync-photos" in bucket_names()


FOREIGN_STATEMENT = {
    "Sid": "ForeignTeamAccess",
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
    "Action": "sqs:ReceiveMessage",
    "Resource": "arn:aws:sqs:us-east-1:123456789012:admin-sync-events",
}


def foreign_queue_policy() -> str:
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName="admin-sync-events")["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]


def test_the_plan_marks_whose_each_step_is(admin_client, photos):
    html = sync_action(admin_client, [photos]).content.decode()
    assert "<th>Owner</th>" in html
    assert '<td class="ownership-ours">ours</td>' in html
    assert 'id="sync-foreign"' not in html


def test_a_foreign_queue_blocks_sync_until_the_adoption_is_reviewed_and_applied(
    admin_client, photos
):
    policy = json.dumps({"Version": "2012-10-17", "Statement": [FOREIGN_STATEMENT]})
    client("sqs").create_queue(QueueName="admin-sync-events", Attributes={"Policy": policy})
    html = sync_action(admin_client, [photos]).content.decode()
    assert 'id="sync-foreign"' in html and "SQS queue admin-sync-events exists" in html
    assert 'value="Apply these changes"' not in html
    assert 'id="sync-review-adoption"' in html
    refused = sync_action(admin_client, [photos], post="yes").content.decode()
    assert "sync_notifications --adopt" in refused
    assert "admin-sync-photos" not in bucket_names()
    review = sync_action(admin_client, [photos], adopt="yes").content.decode()
    assert '<td class="ownership-adopted">adopted</td>' in review
    assert 'name="adopt" value="yes"' in review and 'value="Apply these changes"' in review
    applied = sync_action(admin_client, [photos], adopt="yes", post="yes").content.decode()
    assert "Synced to AWS:" in applied
    statements = {s["Sid"]: s for s in json.loads(foreign_queue_policy())["Statement"]}
    assert statements["ForeignTeamAccess"] == FOREIGN_STATEMENT and "s3tasks-s3" in statements
    origins = set(ManagedResource.objects.values_list("kind", "origin"))
    assert ("queue", "adopted") in origins


def test_ownership_records_are_listed_read_only_in_the_admin(admin_client, photos):
    sync_action(admin_client, [photos], post="yes")
    url = reverse("admin:s3tasks_managedresource_changelist")
    html = admin_client.get(url).content.decode()
    assert "arn:aws:sqs:us-east-1:123456789012:admin-sync-events" in html
    assert "created by sync" in html
    assert admin_client.get(reverse("admin:s3tasks_managedresource_add")).status_code == 403
