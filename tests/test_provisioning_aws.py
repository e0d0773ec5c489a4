"""compute_plan/apply_plan against moto's HTTP server: idempotency, dry run, foreign entries,
prune, recorded status, and AWS errors moto cannot produce (stubbed). Ownership cases (foreign,
adopted, upgraded from 0.1) are in test_provisioning_ownership.py."""

from __future__ import annotations

import json

import pytest

from s3tasks.models import (
    Bucket,
    HandlerBinding,
    ManagedResource,
    NotificationRule,
    Queue,
    Subscription,
    Topic,
)
from s3tasks.provisioning.service import apply_plan, aws_clients, compute_plan, iam_policies, sync

pytestmark = pytest.mark.django_db

ACCOUNT = "123456789012"
FOREIGN_QUEUE = {
    "Id": "someone-elses-queue",
    "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:foreign",
    "Events": ["s3:ObjectCreated:*"],
    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "theirs/"}]}},
}
FOREIGN_LAMBDA = {
    "Id": "someone-elses-lambda",
    "LambdaFunctionArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:thumbs",
    "Events": ["s3:ObjectRemoved:*"],
}


@pytest.fixture
def aws(moto_endpoint):
    return aws_clients()


@pytest.fixture
def uploads(db):
    bucket = Bucket.objects.create(name="acme-uploads")
    NotificationRule.objects.create(
        bucket=bucket, events=["s3:ObjectCreated:*"], prefix="in/", name="imports"
    )
    return bucket


def state(clients) -> dict:
    """Everything sync could touch, for before/after comparisons."""
    s3, sqs, sns = clients["s3"], clients["sqs"], clients["sns"]
    result: dict = {"buckets": {}, "queues": {}, "topics": {}, "subscriptions": []}
    for b in s3.list_buckets()["Buckets"]:
        config = s3.get_bucket_notification_configuration(Bucket=b["Name"])
        config.pop("ResponseMetadata")
        result["buckets"][b["Name"]] = config
    for url in sqs.list_queues().get("QueueUrls", []):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        result["queues"][url] = attrs
    for t in sns.list_topics()["Topics"]:
        attrs = sns.get_topic_attributes(TopicArn=t["TopicArn"])["Attributes"]
        result["topics"][t["TopicArn"]] = attrs["Policy"]
    result["subscriptions"] = sorted(
        s["SubscriptionArn"] for s in sns.list_subscriptions()["Subscriptions"]
    )
    return result


def add_foreign_entries(clients) -> None:
    clients["sqs"].create_queue(QueueName="foreign")
    clients["s3"].put_bucket_notification_configuration(
        Bucket="acme-uploads",
        NotificationConfiguration={
            "QueueConfigurations": [FOREIGN_QUEUE],
            "LambdaFunctionConfigurations": [FOREIGN_LAMBDA],
        },
    )


def notification(clients, bucket="acme-uploads") -> dict:
    config = clients["s3"].get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata")
    return config


def test_sync_creates_everything_and_a_second_plan_has_no_changes(aws, uploads):
    result = sync()
    assert result.ok and result.plan.has_changes
    config = notification(aws)
    (entry,) = config["QueueConfigurations"]
    assert entry["Id"] == f"s3tasks-rule-{uploads.rules.get().pk}"
    assert entry["QueueArn"].endswith(":s3tasks-events")
    again = compute_plan()
    assert not again.has_changes, [s.message for s in again.steps]


def test_dry_run_changes_nothing_in_aws(aws, uploads):
    aws["s3"].create_bucket(Bucket="acme-uploads")
    add_foreign_entries(aws)
    before = state(aws)
    result = sync(dry_run=True)
    assert result.result is None and result.plan.has_changes
    assert state(aws) == before


def test_foreign_entries_survive_sync_and_prune_byte_for_byte(aws, uploads):
    aws["s3"].create_bucket(Bucket="acme-uploads")
    add_foreign_entries(aws)
    assert sync().ok
    config = notification(aws)
    assert config["QueueConfigurations"][0] == FOREIGN_QUEUE
    assert config["LambdaFunctionConfigurations"] == [FOREIGN_LAMBDA]
    uploads.rules.update(enabled=False)
    assert sync(prune=True).ok
    config = notification(aws)
    assert config["QueueConfigurations"] == [FOREIGN_QUEUE]
    assert config["LambdaFunctionConfigurations"] == [FOREIGN_LAMBDA]


def test_prune_removes_stale_owned_entries_only_when_asked(aws, uploads):
    other = NotificationRule.objects.create(
        bucket=uploads, events=["s3:ObjectRemoved:*"], prefix="old/", name="old"
    )
    assert sync().ok
    stale_id = other.pk
    other.delete()
    plan = compute_plan()
    assert not plan.has_changes
    assert [s.message for s in plan.notes] == [
        f"would remove stale entry s3tasks-rule-{stale_id} from bucket acme-uploads (use --prune)"
    ]
    assert len(notification(aws)["QueueConfigurations"]) == 2
    assert sync(prune=True).ok
    ids = [e["Id"] for e in notification(aws)["QueueConfigurations"]]
    assert ids == [f"s3tasks-rule-{uploads.rules.get().pk}"]
    assert not compute_plan(prune=True).steps


def test_prune_deletes_queues_and_topics_sync_created_but_not_foreign_ones(aws, uploads):
    topic = Topic.objects.create(name="fanout")
    queue = Queue.objects.create(name="work")
    Subscription.objects.create(topic=topic, queue=queue, raw_message_delivery=True)
    assert sync().ok
    aws["sns"].create_topic(Name="not-ours")
    Subscription.objects.all().delete()
    topic.delete()
    queue.delete()
    plan = compute_plan()
    assert sorted(s.action for s in plan.notes) == [
        "keep_stale",
        "keep_stale",
        "keep_stale",
        "keep_stale",
    ]
    assert sync(prune=True).ok
    names = [t["TopicArn"].rsplit(":", 1)[-1] for t in aws["sns"].list_topics()["Topics"]]
    assert names == ["not-ours"]
    queues = [u.rsplit("/", 1)[-1] for u in aws["sqs"].list_queues()["QueueUrls"]]
    assert "work" not in queues and "work-dlq" not in queues
    assert "s3tasks-events" in queues


def test_sync_records_created_resources_and_status_on_the_models(aws, uploads):
    assert sync().ok
    uploads.refresh_from_db()
    queue = Queue.objects.get(name="s3tasks-events")
    assert uploads.last_sync_status == "ok" and uploads.created_by_s3tasks
    assert uploads.arn == "arn:aws:s3:::acme-uploads" and uploads.last_synced_at
    assert queue.created_by_s3tasks and queue.url.endswith("/s3tasks-events")
    assert queue.arn == f"arn:aws:sqs:us-east-1:{ACCOUNT}:s3tasks-events"


def test_attributes_of_a_queue_sync_created_are_put_back_in_place(aws, uploads):
    assert sync().ok
    url = aws["sqs"].get_queue_url(QueueName="s3tasks-events")["QueueUrl"]
    policy = aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
    # moto drops the policy unless it is sent along (AWS keeps it): send it as read.
    changed = {"VisibilityTimeout": "5", "Policy": policy["Attributes"]["Policy"]}
    aws["sqs"].set_queue_attributes(QueueUrl=url, Attributes=changed)
    plan = compute_plan()
    assert [s.message for s in plan.changes] == [
        "update SQS queue s3tasks-events: set VisibilityTimeout"
    ]
    assert sync().ok
    attrs = aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "60"
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith("events-dlq")


def test_subscription_settings_and_cors_are_synced(aws, uploads):
    topic = Topic.objects.create(name="fanout")
    queue = Queue.objects.create(name="work")
    sub = Subscription.objects.create(
        topic=topic, queue=queue, filter_policy={"kind": ["csv"]}, raw_message_delivery=True
    )
    rules = [{"AllowedMethods": ["PUT"], "AllowedOrigins": ["https://app.example.com"]}]
    Bucket.objects.filter(pk=uploads.pk).update(cors_rules=rules)
    assert sync().ok
    assert aws["s3"].get_bucket_cors(Bucket="acme-uploads")["CORSRules"] == rules
    sub.refresh_from_db()
    attrs = aws["sns"].get_subscription_attributes(SubscriptionArn=sub.arn)["Attributes"]
    assert attrs["RawMessageDelivery"] == "true"
    assert json.loads(attrs["FilterPolicy"]) == {"kind": ["csv"]}
    Subscription.objects.filter(pk=sub.pk).update(raw_message_delivery=False, filter_policy=None)
    plan = compute_plan()
    assert [s.action for s in plan.changes] == ["update_subscription"]
    assert sync().ok and not compute_plan().has_changes
    assert Subscription.objects.get().arn == sub.arn  # kept through the update


def test_bucket_scope_leaves_other_buckets_alone(aws, uploads):
    Bucket.objects.create(name="acme-other")
    plan = compute_plan(["acme-other"])
    assert {s.resource for s in plan.steps} == {"acme-other"}


def test_destination_validation_error_becomes_a_readable_failure(aws, uploads):
    import boto3
    from botocore.stub import Stubber

    aws["s3"].create_bucket(Bucket="acme-uploads")
    plan = compute_plan(["acme-uploads"])
    s3 = boto3.client("s3", region_name="us-east-1")
    clients = {**aws, "s3": s3}
    stubber = Stubber(s3)
    stubber.add_response("get_bucket_notification_configuration", {}, {"Bucket": "acme-uploads"})
    stubber.add_client_error(
        "put_bucket_notification_configuration",
        service_error_code="InvalidArgument",
        service_message="Unable to validate the following destination configurations",
    )
    with stubber:
        result = apply_plan(plan, clients=clients)
    assert not result.ok and result.failed_step.action == "put_notifications"
    assert "Unable to validate" in result.error and "policy" in result.error
    uploads.refresh_from_db()
    assert uploads.last_sync_status == "failed" and "Unable to validate" in uploads.last_sync_error


def test_ownership_is_recorded_before_each_call_and_undone_when_aws_refuses_it(aws, uploads):
    import boto3
    from botocore.stub import Stubber

    plan = compute_plan(["acme-uploads"])
    sqs = boto3.client("sqs", region_name="us-east-1")
    stubber = Stubber(sqs)
    stubber.add_client_error("create_queue", service_error_code="AccessDenied")
    with stubber:
        result = apply_plan(plan, clients={**aws, "sqs": sqs})
    assert not result.ok and result.failed_step.action == "create_queue"
    kinds = sorted(ManagedResource.objects.values_list("kind", "identifier"))
    assert kinds == [("bucket", "arn:aws:s3:::acme-uploads")]  # the bucket step went through


def test_iam_policies_follow_binding_access_modes(aws, uploads):
    HandlerBinding.objects.create(rule=uploads.rules.get(), handler_name="x.read", access="read")
    HandlerBinding.objects.create(
        rule=uploads.rules.get(), handler_name="x.write", access="readwrite"
    )
    policies = iam_policies(["acme-uploads"], publish_targets=["arn:aws:sns:us-east-1:1:out"])
    statements = {s["Sid"]: s for s in policies["worker"]["Statement"]}
    assert statements["S3tasksConsumeQueues"]["Resource"] == [
        f"arn:aws:sqs:us-east-1:{ACCOUNT}:s3tasks-events"
    ]
    assert statements["S3tasksGetObject"]["Resource"] == ["arn:aws:s3:::acme-uploads/in/*"]
    assert statements["S3tasksPutObject"]["Resource"] == ["arn:aws:s3:::acme-uploads/in/*"]
    assert statements["S3tasksPublishTopics"]["Resource"] == ["arn:aws:sns:us-east-1:1:out"]
    assert "S3tasksSendQueues" not in statements
    operator = {s["Sid"]: s for s in policies["operator"]["Statement"]}
    assert "s3:PutBucketNotification" in operator["S3tasksSyncBuckets"]["Action"]
    assert not any("DeleteBucket" in a for s in operator.values() for a in s["Action"])
