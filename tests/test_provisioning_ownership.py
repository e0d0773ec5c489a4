"""Sync changes and prunes only what s3tasks recorded as its own, against moto's HTTP server:
foreign queues/topics/subscriptions/entries/statements, `--adopt`, prune, and the upgrade from
0.1 (tagged resources and `s3tasks-rule-<id>` entries, no ownership rows)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from s3tasks.aws import client
from s3tasks.models import Bucket, ManagedResource, NotificationRule, Queue, Subscription, Topic
from s3tasks.provisioning.service import apply_plan, compute_plan, sync

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

ACCOUNT = "123456789012"
EVENTS_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:s3tasks-events"
FOREIGN_STATEMENT = {
    "Sid": "ForeignTeamAccess",
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
    "Action": "sqs:ReceiveMessage",
    "Resource": EVENTS_ARN,
}


@pytest.fixture(autouse=True)
def no_other_configuration(db) -> None:
    """Start from empty configuration (migrate adds the example project's code rules)."""
    NotificationRule.objects.all().delete()
    Subscription.objects.all().delete()
    Bucket.objects.all().delete()
    Queue.objects.all().delete()
    Topic.objects.all().delete()


@pytest.fixture
def uploads(moto_endpoint) -> Bucket:
    """A bucket with one rule sending to the default queue (`s3tasks-events`)."""
    bucket = Bucket.objects.create(name="acme-uploads")
    NotificationRule.objects.create(
        bucket=bucket, events=["s3:ObjectCreated:*"], prefix="in/", name="imports"
    )
    return bucket


def make_foreign_events_queue() -> str:
    """Another team's `s3tasks-events`: their own statement, their visibility timeout."""
    policy = {"Version": "2012-10-17", "Statement": [FOREIGN_STATEMENT]}
    attributes = {"VisibilityTimeout": "123", "Policy": json.dumps(policy)}
    return client("sqs").create_queue(QueueName="s3tasks-events", Attributes=attributes)["QueueUrl"]


def queue_attributes(name: str) -> dict[str, str]:
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def statements(policy: str) -> dict[str, dict]:
    return {s.get("Sid", ""): s for s in json.loads(policy)["Statement"]}


def queue_names() -> set[str]:
    return {u.rsplit("/", 1)[-1] for u in client("sqs").list_queues().get("QueueUrls", [])}


def entry_ids(bucket: str = "acme-uploads") -> list[str]:
    config = client("s3").get_bucket_notification_configuration(Bucket=bucket)
    return sorted(e["Id"] for e in config.get("QueueConfigurations", []))


def records() -> dict[tuple[str, str], str]:
    return {(r.kind, r.identifier): r.origin for r in ManagedResource.objects.all()}


def run_sync(*args: str) -> str:
    out = io.StringIO()
    call_command("sync_notifications", "--no-input", *args, stdout=out)
    return out.getvalue()


def test_plain_sync_leaves_a_foreign_queue_with_our_name_untouched_and_says_how_to_proceed(
    uploads,
):
    make_foreign_events_queue()
    before = queue_attributes("s3tasks-events")
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"--adopt.*or change the models"):
        call_command("sync_notifications", "--no-input", stdout=out)
    text = out.getvalue()
    assert "✗ [foreign] SQS queue s3tasks-events exists but s3tasks did not create it" in text
    assert "Run again with --adopt" in text
    after = queue_attributes("s3tasks-events")
    assert after["Policy"] == before["Policy"] and after["VisibilityTimeout"] == "123"
    assert "RedrivePolicy" not in after
    assert queue_names() == {"s3tasks-events"}  # no DLQ made either: nothing was applied
    assert not records()


def test_dry_run_json_marks_the_foreign_queue_and_exits_with_an_error(uploads):
    make_foreign_events_queue()
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("sync_notifications", "--dry-run", "--format", "json", stdout=out)
    plan = json.loads(out.getvalue())
    assert plan["blocked"] is True and plan["adopt"] is False
    (foreign,) = [s for s in plan["steps"] if s["action"] == "foreign"]
    assert (foreign["resource_type"], foreign["resource"]) == ("queue", "s3tasks-events")
    assert foreign["ownership"] == "foreign" and foreign["pending"] is False
    assert {s["ownership"] for s in plan["steps"] if s["pending"]} == {"ours"}
    out = io.StringIO()
    with pytest.raises(CommandError) as exited:  # 2: changes pending, no longer blocked
        call_command("sync_notifications", "--dry-run", "--format", "json", "--adopt", stdout=out)
    assert exited.value.returncode == 2
    adopted = json.loads(out.getvalue())
    assert adopted["blocked"] is False and adopted["adopt"] is True
    (step,) = [s for s in adopted["steps"] if s["resource"] == "s3tasks-events"]
    assert (step["action"], step["ownership"]) == ("adopt_queue", "adopted")
    assert step["claims"][0] == {"kind": "queue", "identifier": EVENTS_ARN, "origin": "adopted"}


def test_adopt_merges_our_statement_and_keeps_foreign_statements_and_attributes(uploads):
    make_foreign_events_queue()
    out = run_sync("--adopt")
    assert "~ [adopted] adopt SQS queue s3tasks-events: policy statements: add s3tasks-s3" in out
    assert "(kept as read: ForeignTeamAccess)" in out
    attributes = queue_attributes("s3tasks-events")
    policy = statements(attributes["Policy"])
    assert set(policy) == {"ForeignTeamAccess", "s3tasks-s3"}
    assert policy["ForeignTeamAccess"] == FOREIGN_STATEMENT
    assert attributes["VisibilityTimeout"] == "123"  # a default is never forced on it
    assert "RedrivePolicy" not in attributes
    assert "s3tasks-events-dlq" not in queue_names()
    assert records()[("queue", EVENTS_ARN)] == "adopted"
    assert records()[("policy_statement", f"{EVENTS_ARN}#s3tasks-s3")] == "created"
    assert entry_ids() == [f"s3tasks-rule-{uploads.rules.get().pk}"]
    again = compute_plan()  # recorded now: a plain sync has nothing to do and is not blocked
    assert not again.blocked and not again.has_changes, [s.message for s in again.steps]


def test_an_adopted_queue_gets_the_fields_its_queue_row_sets(uploads):
    make_foreign_events_queue()
    failed = Queue.objects.create(name="events-failed")
    Queue.objects.create(
        name="s3tasks-events", visibility_timeout=90, dead_letter_queue=failed, max_receive_count=3
    )
    assert sync(adopt=True).ok
    attributes = queue_attributes("s3tasks-events")
    assert attributes["VisibilityTimeout"] == "90"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:events-failed",
        "maxReceiveCount": 3,
    }
    assert set(statements(attributes["Policy"])) == {"ForeignTeamAccess", "s3tasks-s3"}
    assert records()[("queue", f"arn:aws:sqs:us-east-1:{ACCOUNT}:events-failed")] == "created"


def test_prune_keeps_foreign_entries_whose_id_starts_with_s3tasks(uploads):
    client("s3").create_bucket(Bucket="acme-uploads")
    client("sqs").create_queue(QueueName="audit")
    theirs = [
        {
            "Id": name,
            "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:audit",
            "Events": ["s3:ObjectRemoved:*"],
        }
        for name in ("s3tasks-audit", "s3tasks-rule-4242")
    ]
    client("s3").put_bucket_notification_configuration(
        Bucket="acme-uploads", NotificationConfiguration={"QueueConfigurations": theirs}
    )
    out = run_sync()
    assert "! [foreign] keep entry s3tasks-audit on bucket acme-uploads" in out
    ours = f"s3tasks-rule-{uploads.rules.get().pk}"
    assert entry_ids() == sorted(["s3tasks-audit", "s3tasks-rule-4242", ours])
    uploads.rules.update(enabled=False)
    out = run_sync("--prune")
    assert f"remove stale entry {ours}" in out
    assert entry_ids() == ["s3tasks-audit", "s3tasks-rule-4242"]
    assert not [k for k in records() if k[0] == "notification"]


def test_a_foreign_entry_with_an_id_sync_writes_blocks_until_adopted(uploads):
    assert sync().ok  # the bucket now has recorded entries: Ids prove nothing any more
    later = NotificationRule.objects.create(
        bucket=uploads, events=["s3:ObjectRemoved:*"], prefix="out/", name="exports"
    )
    config = client("s3").get_bucket_notification_configuration(Bucket="acme-uploads")
    config.pop("ResponseMetadata")
    config["QueueConfigurations"].append(
        {"Id": f"s3tasks-rule-{later.pk}", "QueueArn": EVENTS_ARN, "Events": ["s3:ObjectCreated:*"]}
    )
    client("s3").put_bucket_notification_configuration(
        Bucket="acme-uploads", NotificationConfiguration=config
    )
    plan = compute_plan()
    assert plan.blocked
    assert f"notification entries s3tasks-rule-{later.pk} with Ids sync writes" in (
        plan.foreign[0].message
    )
    adopted = compute_plan(adopt=True)
    (step,) = [s for s in adopted.changes if s.action == "put_notifications"]
    assert step.ownership == "adopted" and "adopt and replace entry" in step.message
    assert sync(adopt=True).ok
    bucket_arn = "arn:aws:s3:::acme-uploads"
    assert records()[("notification", f"{bucket_arn}#s3tasks-rule-{later.pk}")] == "adopted"
    config = client("s3").get_bucket_notification_configuration(Bucket="acme-uploads")
    (entry,) = [e for e in config["QueueConfigurations"] if e["Id"].endswith(str(later.pk))]
    assert entry["Events"] == ["s3:ObjectRemoved:*"]


def test_a_foreign_topic_queue_and_subscription_are_adopted_only_on_request(moto_endpoint):
    sns, sqs = client("sns"), client("sqs")
    topic_arn = sns.create_topic(Name="fanout")["TopicArn"]
    sqs.create_queue(QueueName="work")
    work_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:work"
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=work_arn)
    bucket = Bucket.objects.create(name="acme-fanout")
    topic = Topic.objects.create(name="fanout")
    NotificationRule.objects.create(bucket=bucket, events=["s3:ObjectCreated:*"], topic=topic)
    Subscription.objects.create(
        topic=topic, queue=Queue.objects.create(name="work"), raw_message_delivery=True
    )
    plan = compute_plan()
    assert sorted(s.resource for s in plan.foreign) == ["fanout", "fanout → work", "work"]
    adopted = compute_plan(adopt=True)
    assert not adopted.blocked
    marks = {s.resource: s.ownership for s in adopted.changes if s.ownership == "adopted"}
    assert marks == {"fanout": "adopted", "fanout → work": "adopted", "work": "adopted"}
    assert sync(adopt=True).ok
    policy = statements(sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]["Policy"])
    assert set(policy) == {"__default_statement_ID", "s3tasks-s3"}
    (sub,) = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    attrs = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
    assert attrs["RawMessageDelivery"] == "true"
    origins = {k[0]: v for k, v in records().items() if k[0] in ("queue", "topic", "subscription")}
    assert origins == {"queue": "adopted", "topic": "adopted", "subscription": "adopted"}
    assert Subscription.objects.get().arn == sub["SubscriptionArn"]  # recorded on adoption
    assert not compute_plan().has_changes


def test_prune_releases_an_adopted_queue_instead_of_deleting_it(uploads):
    make_foreign_events_queue()
    assert sync(adopt=True).ok
    uploads.rules.update(queue=Queue.objects.create(name="jobs"))
    plan = compute_plan()
    assert "would release SQS queue s3tasks-events (adopted" in " ".join(
        s.message for s in plan.notes
    )
    assert sync(prune=True).ok
    assert {"s3tasks-events", "jobs", "jobs-dlq"} <= queue_names()
    policy = statements(queue_attributes("s3tasks-events")["Policy"])
    assert policy == {"ForeignTeamAccess": FOREIGN_STATEMENT}
    assert not [k for k in records() if EVENTS_ARN in k[1]]


def leftover_entry(entry_id: str, queue: str) -> dict:
    """An entry 0.1 wrote for a rule that was deleted before the upgrade."""
    return {
        "Id": entry_id,
        "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}",
        "Events": ["s3:ObjectRemoved:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{queue}/"}]}},
    }


def test_upgrade_from_0_1_recognises_tagged_resources_and_rule_entries(moto_endpoint):
    bucket = Bucket.objects.create(name="acme-upgrade")
    topic = Topic.objects.create(name="fanout")
    rule = NotificationRule.objects.create(
        bucket=bucket, events=["s3:ObjectCreated:*"], topic=topic
    )
    Subscription.objects.create(topic=topic, queue=Queue.objects.create(name="work"))
    assert sync().ok
    ManagedResource.objects.all().delete()  # what a database synced by 0.1 looks like
    client("sqs").create_queue(QueueName="elsewhere")  # not tagged: not made by s3tasks
    config = client("s3").get_bucket_notification_configuration(Bucket="acme-upgrade")
    config.pop("ResponseMetadata")
    config["QueueConfigurations"] = [
        leftover_entry("s3tasks-rule-9999", "work"),  # to a tagged queue: 0.1 made it
        leftover_entry("s3tasks-rule-9998", "elsewhere"),  # proves nothing: kept
    ]
    client("s3").put_bucket_notification_configuration(
        Bucket="acme-upgrade", NotificationConfiguration=config
    )
    plan = compute_plan()
    assert not plan.blocked
    assert {s.action for s in plan.changes} == {"record"}
    assert {s.ownership for s in plan.changes} == {"ours"}
    messages = "\n".join(s.message for s in plan.steps)
    assert "tagged s3tasks:managed by an earlier release" in messages
    recognised_ids = ", ".join(sorted(["s3tasks-rule-9999", f"s3tasks-rule-{rule.pk}"]))
    assert f"{recognised_ids} as s3tasks' (made by an earlier release)" in messages
    assert "keep entry s3tasks-rule-9998" in messages
    assert sync().ok
    recognised = records()
    assert set(recognised.values()) == {"recognised"}
    assert {k[0] for k in recognised} == {
        "queue",
        "topic",
        "subscription",
        "notification",
        "policy_statement",
    }
    assert not compute_plan().has_changes
    Subscription.objects.all().delete()
    rule.delete()
    topic.delete()
    assert sync(prune=True).ok
    assert client("sns").list_topics()["Topics"] == []
    config = client("s3").get_bucket_notification_configuration(Bucket="acme-upgrade")
    assert [e["Id"] for e in config.get("QueueConfigurations", [])] == ["s3tasks-rule-9998"]


def test_records_of_resources_deleted_outside_sync_are_forgotten(moto_endpoint):
    Queue.objects.create(name="scratch")
    assert sync().ok
    scratch = f"arn:aws:sqs:us-east-1:{ACCOUNT}:scratch"
    assert ("queue", scratch) in records()
    Queue.objects.filter(name="scratch").delete()
    sqs = client("sqs")
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName="scratch")["QueueUrl"])
    plan = compute_plan()
    assert "forget SQS queue scratch: recorded as s3tasks' but gone from AWS" in [
        s.message for s in plan.changes
    ]
    assert sync().ok
    assert ("queue", scratch) not in records()


def test_policies_are_merged_against_what_aws_holds_when_the_plan_is_applied(uploads):
    assert sync().ok
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName="s3tasks-events")["QueueUrl"]
    NotificationRule.objects.create(
        bucket=Bucket.objects.create(name="acme-more"), events=["s3:ObjectCreated:*"]
    )
    plan = compute_plan()  # adds acme-more to our statement
    current = json.loads(queue_attributes("s3tasks-events")["Policy"])
    current["Statement"].append(FOREIGN_STATEMENT)  # someone else, between plan and apply
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(current)})
    assert apply_plan(plan).ok
    policy = statements(queue_attributes("s3tasks-events")["Policy"])
    assert policy["ForeignTeamAccess"] == FOREIGN_STATEMENT
    assert "arn:aws:s3:::acme-more" in json.dumps(policy["s3tasks-s3"])
    Queue.objects.create(name="s3tasks-events", visibility_timeout=77)
    assert [s.message for s in compute_plan().changes] == [
        "update SQS queue s3tasks-events: set VisibilityTimeout"
    ]
    assert sync().ok  # an attribute change alone keeps every statement
    attributes = queue_attributes("s3tasks-events")
    assert attributes["VisibilityTimeout"] == "77"
    assert set(statements(attributes["Policy"])) == {"ForeignTeamAccess", "s3tasks-s3"}
