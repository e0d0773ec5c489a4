"""`manage.py sync_notifications` end to end against moto's HTTP server: sync, then upload and
see the S3 event arrive (directly, and through SNS raw and wrapped); dry-run exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import unquote_plus

import pytest
from django.core.management import CommandError, call_command

from s3tasks.aws import client
from s3tasks.models import Bucket, NotificationRule, Queue, Subscription, Topic
from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.integration


def s3_records(queue: str, expected: int = 1) -> list[dict]:
    """Bodies of the S3 messages in a queue (skipping the s3:TestEvent S3 sends on setup)."""
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    bodies: list[dict] = []
    for _ in range(10):
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            body = json.loads(m["Body"])
            if body.get("Event") != "s3:TestEvent" and "s3:TestEvent" not in body.get(
                "Message", ""
            ):
                bodies.append(body)
        if len(bodies) >= expected:
            break
    return bodies


@pytest.fixture
def configured(db):
    direct = Bucket.objects.create(name="e2e-direct")
    fanout = Bucket.objects.create(name="e2e-fanout")
    NotificationRule.objects.create(
        bucket=direct,
        events=["s3:ObjectCreated:*"],
        prefix="in/",
        queue=Queue.objects.create(name="e2e-direct-q"),
    )
    topic = Topic.objects.create(name="e2e-topic")
    NotificationRule.objects.create(bucket=fanout, events=["s3:ObjectCreated:*"], topic=topic)
    Subscription.objects.create(
        topic=topic, queue=Queue.objects.create(name="e2e-raw"), raw_message_delivery=True
    )
    Subscription.objects.create(topic=topic, queue=Queue.objects.create(name="e2e-wrapped"))


def test_sync_then_upload_delivers_events_directly_and_through_sns(
    moto_endpoint, configured, capsys
):
    call_command("sync_notifications", "--no-input")
    out = capsys.readouterr().out
    assert "create SQS queue e2e-direct-q" in out and "Applied" in out

    s3 = client("s3")
    s3.put_object(Bucket="e2e-direct", Key="in/red flower.csv", Body=b"a,b\n")
    s3.put_object(Bucket="e2e-fanout", Key="report.csv", Body=b"a,b\n")

    (direct,) = s3_records("e2e-direct-q")
    # moto also encodes "/" (real S3 does not); unquote_plus reads both
    assert unquote_plus(direct["Records"][0]["s3"]["object"]["key"]) == "in/red flower.csv"
    (raw,) = s3_records("e2e-raw")
    assert raw["Records"][0]["s3"]["bucket"]["name"] == "e2e-fanout"
    (wrapped,) = s3_records("e2e-wrapped")
    assert wrapped["Type"] == "Notification"
    assert json.loads(wrapped["Message"])["Records"][0]["s3"]["object"]["key"] == "report.csv"

    call_command("sync_notifications", "--dry-run", "--format", "json")  # no SystemExit: in sync
    assert json.loads(capsys.readouterr().out)["has_changes"] is False


def test_dry_run_exits_2_with_pending_changes_and_0_when_in_sync(moto_endpoint, configured):
    with pytest.raises(CommandError, match="changes pending") as exited:
        call_command("sync_notifications", "--dry-run", "--bucket", "e2e-direct")
    assert exited.value.returncode == 2
    assert client("sqs").list_queues().get("QueueUrls", []) == []
    call_command("sync_notifications", "--no-input", "--bucket", "e2e-direct")
    call_command("sync_notifications", "--dry-run", "--bucket", "e2e-direct")


def test_unknown_bucket_and_overlaps_become_command_errors(moto_endpoint, configured):
    with pytest.raises(CommandError, match="No Bucket row named 'nope'"):
        call_command("sync_notifications", "--bucket", "nope")
    other = Queue.objects.create(name="e2e-other")
    NotificationRule.objects.create(
        bucket=Bucket.objects.get(name="e2e-direct"),
        events=["s3:ObjectCreated:Put"],
        prefix="in/x",
        queue=other,
        name="clashing",
    )
    with pytest.raises(CommandError, match="clashing"):
        call_command("sync_notifications", "--dry-run")


def test_print_iam_policy_outputs_worker_and_operator_policies(moto_endpoint, configured, capsys):
    call_command("sync_notifications", "--print-iam-policy")
    policies = json.loads(capsys.readouterr().out)
    assert set(policies) == {"worker", "operator"}
    consumed = {s["Sid"]: s for s in policies["worker"]["Statement"]}["S3tasksConsumeQueues"]
    assert "arn:aws:sqs:us-east-1:123456789012:e2e-raw" in consumed["Resource"]
    assert "arn:aws:sqs:us-east-1:123456789012:e2e-raw-dlq" not in consumed["Resource"]
    watched = {s["Sid"]: s for s in policies["worker"]["Statement"]}
    assert watched["S3tasksWatchDeadLetterQueues"] == {  # the metrics' dead-letter gauges
        "Sid": "S3tasksWatchDeadLetterQueues",
        "Effect": "Allow",
        "Action": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
        "Resource": [  # every queue gets a dead-letter queue by default
            f"arn:aws:sqs:us-east-1:123456789012:{name}-dlq"
            for name in ("e2e-direct-q", "e2e-raw", "e2e-wrapped", "s3tasks-events")
        ],
    }
    redrive = {s["Sid"]: s for s in policies["operator"]["Statement"]}["S3tasksRedriveQueues"]
    assert {"sqs:SendMessage", "sqs:StartMessageMoveTask"} <= set(redrive["Action"])
    assert "arn:aws:sqs:us-east-1:123456789012:e2e-raw" in redrive["Resource"]


@pytest.mark.django_db(transaction=True)
def test_manage_py_dry_run_subprocess_reports_pending_changes_by_exit_code(moto_endpoint):
    Bucket.objects.create(name="e2e-subprocess")
    command = [sys.executable, "manage.py", "sync_notifications", "--dry-run"]
    env = subprocess_env(S3TASKS_ENDPOINT_URL=moto_endpoint)
    pending = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert pending.returncode == 2, pending.stderr
    assert "create S3 bucket e2e-subprocess" in pending.stdout
    call_command("sync_notifications", "--no-input")
    clean = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no changes" in clean.stdout.lower()
