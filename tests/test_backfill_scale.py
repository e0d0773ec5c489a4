"""Backfill at scale on an in-process AWS (moto's `mock_aws`): `--enqueue` to the rules' SQS
queues for the workers, a Batch Operations CSV manifest, and the `create_job` request
(moto cannot create Batch Operations jobs: botocore's Stubber checks the request instead)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from botocore.stub import ANY, Stubber
from django.core.management import CommandError, call_command
from moto import mock_aws

from s3tasks import aws
from s3tasks.envelopes import parse_events
from s3tasks.events import EventSource
from s3tasks.exceptions import BackfillError
from s3tasks.models import Backfill, NotificationRule, Queue, Subscription
from s3tasks.models import Topic as TopicRow
from s3tasks.ops import backfill_jobs
from s3tasks.ops.backfill import run_backfill, start_backfill
from s3tasks.ops.backfill_enqueue import EnqueueSender
from s3tasks.ops.backfill_jobs import (
    JobSpec,
    Manifest,
    S3Location,
    create_job_request,
    write_manifest,
)
from s3tasks.ops.backfill_objects import BackfillRequest
from s3tasks.processing.messages import InboundMessage, Status, process_messages
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of
from tests.worker_app.handlers import COUNT, runs_per_key
from tests.worker_support import bind

pytestmark = pytest.mark.django_db

BUCKET = "backfill-scale"
OTHER = "tests.dispatch.count"
AWKWARD = ["in/with space.csv", "in/plus+sign.csv", "in/ünïcødé ファイル.csv", 'in/100%,".csv']
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:s3tasks"
ROLE = "arn:aws:iam::123456789012:role/s3tasks-batch-operations"


@pytest.fixture
def aws_clients(aws_credentials, settings):
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": None, "DISPATCH": "inline"}
    with mock_aws():
        aws.reset_clients()
        s3, sqs = aws.client("s3"), aws.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        yield s3, sqs
    aws.reset_clients()


def put(s3, *keys: str) -> None:
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")


def drain(sqs, queue: str) -> list[str]:
    """Every body waiting in `queue` (received and deleted)."""
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return bodies
        for message in got:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def work(bodies: list[str]) -> list[Status]:
    """What an sqs_worker does with these bodies (inline)."""
    messages = [InboundMessage(f"m{n}", body) for n, body in enumerate(bodies)]
    return [o.status for o in process_messages(messages, dispatch_mode="inline")]


class CountingSQS:
    def __init__(self, sqs) -> None:
        self.sqs, self.batches = sqs, []
        self.exceptions = sqs.exceptions

    def get_queue_url(self, **kwargs):
        return self.sqs.get_queue_url(**kwargs)

    def send_message_batch(self, **kwargs):
        self.batches.append(len(kwargs["Entries"]))
        return self.sqs.send_message_batch(**kwargs)


# --- --enqueue -------------------------------------------------------------------------------


def test_enqueue_sends_s3_shaped_backfill_bodies_to_the_rule_s_queue_ten_per_call(aws_clients):
    s3, sqs = aws_clients
    sqs.create_queue(QueueName="bf-events")
    keys = [*AWKWARD, *(f"k/{n:02d}.csv" for n in range(21))]
    put(s3, *keys)
    binding = bind(COUNT, BUCKET)
    NotificationRule.objects.filter(pk=binding.rule_id).update(
        queue=Queue.objects.create(name="bf-events")
    )
    counting = CountingSQS(sqs)

    result = run_backfill(start_backfill(BackfillRequest(BUCKET, mode="enqueue")), sqs=counting)

    assert result.ok and result.counters.dispatched == 25
    assert counting.batches == [10, 10, 5]
    assert runs_per_key() == {}  # nothing ran here: the workers run them
    bodies = drain(sqs, "bf-events")
    events = [e for body in bodies for e in parse_events(body)]
    assert sorted(e.key for e in events) == sorted(keys)
    assert {e.source for e in events} == {EventSource.BACKFILL}
    assert {e.raw["s3"]["configurationId"] for e in events} == {"s3tasks-backfill"}
    assert set(work(bodies)) == {Status.HANDLED}
    assert runs_per_key() == dict.fromkeys(keys, 1)
    assert set(work(bodies)) == {Status.HANDLED} and runs_per_key() == dict.fromkeys(keys, 1)


def test_a_worker_runs_only_the_handlers_an_enqueued_backfill_named(aws_clients):
    s3, sqs = aws_clients
    sqs.create_queue(QueueName="s3tasks-events")  # S3TASKS["DEFAULT_QUEUE"]
    put(s3, "a.csv")
    bind(COUNT, BUCKET)

    call_command("s3tasks_backfill", BUCKET, "--enqueue", "--handler", OTHER)

    assert work(drain(sqs, "s3tasks-events")) == [Status.HANDLED]
    assert runs_of(RUNS_BUCKET, "a.csv") == 1 and runs_per_key() == {}


def test_a_topic_rule_s_events_go_to_the_queues_subscribed_to_its_topic(aws_clients):
    s3, sqs = aws_clients
    for name in ("fan-a", "fan-b"):
        sqs.create_queue(QueueName=name)
    put(s3, "a.csv")
    binding = bind(COUNT, BUCKET)
    topic = TopicRow.objects.create(name="fan-out")
    for name in ("fan-a", "fan-b"):
        Subscription.objects.create(topic=topic, queue=Queue.objects.create(name=name))
    NotificationRule.objects.filter(pk=binding.rule_id).update(topic=topic)

    call_command("s3tasks_backfill", BUCKET, "--enqueue")

    bodies = drain(sqs, "fan-a") + drain(sqs, "fan-b")
    assert len(bodies) == 2
    assert set(work(bodies)) == {Status.HANDLED} and runs_per_key() == {"a.csv": 1}


def test_queue_sends_every_event_to_one_queue_and_a_missing_queue_is_a_clear_error(aws_clients):
    s3, sqs = aws_clients
    sqs.create_queue(QueueName="elsewhere")
    put(s3, "a.csv", "b.csv")
    bind(COUNT, BUCKET)

    with pytest.raises(CommandError, match="'s3tasks-events' does not exist.*--queue"):
        call_command("s3tasks_backfill", BUCKET, "--enqueue")
    assert Backfill.objects.get().state == "failed"

    call_command("s3tasks_backfill", BUCKET, "--enqueue", "--queue", "elsewhere")
    assert len(drain(sqs, "elsewhere")) == 2


class RefusingSQS:
    """SendMessageBatch refusing entries: `plan` holds, per call, {entry id: sender fault}."""

    def __init__(self, plan: list[dict[str, bool]]) -> None:
        self.plan, self.calls = plan, []

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 (boto3's names)
        self.calls.append([e["Id"] for e in Entries])
        refused = self.plan.pop(0) if self.plan else {}
        return {
            "Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in refused],
            "Failed": [
                {"Id": key, "SenderFault": fault, "Code": "Throttled" if not fault else "TooBig"}
                for key, fault in refused.items()
            ],
        }


def test_entries_sqs_refuses_are_sent_again_unless_the_fault_is_ours(monkeypatch):
    monkeypatch.setattr("s3tasks.ops.backfill_enqueue.time.sleep", lambda s: None)
    sender = EnqueueSender.__new__(EnqueueSender)
    sender.sqs = RefusingSQS([{"1": False, "2": True}, {}])
    entries = [(0, "a"), (1, "b"), (2, "c")]

    failed = sender._send_batch("url", entries)

    assert sender.sqs.calls == [["0", "1", "2"], ["1"]]  # the throttled one again, once
    assert failed == [(2, "TooBig: ")]


# --- S3 Batch Operations -------------------------------------------------------------------------


def read_manifest(s3, bucket: str, key: str) -> list[list[str]]:
    text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    return list(csv.reader(io.StringIO(text)))


def test_the_manifest_lists_bucket_and_url_encoded_key_of_every_matching_object(aws_clients):
    s3, _ = aws_clients
    s3.create_bucket(Bucket="manifests")
    put(s3, *AWKWARD, "in/skip.txt", "out/x.csv")

    call_command(
        "s3tasks_backfill",
        BUCKET,
        "--prefix",
        "in/",
        "--suffix",
        ".csv",
        "--handler",
        COUNT,
        "--manifest",
        "s3://manifests/backfills/one.csv",
    )

    rows = read_manifest(s3, "manifests", "backfills/one.csv")
    assert all(len(row) == 2 and row[0] == BUCKET for row in rows)
    assert sorted(unquote(row[1]) for row in rows) == sorted(AWKWARD)
    assert "in/plus%2Bsign.csv" in {row[1] for row in rows}
    assert not Backfill.objects.exists() and runs_per_key() == {}  # nothing dispatched


def test_without_handlers_the_manifest_holds_the_objects_the_rules_route(aws_clients):
    s3, _ = aws_clients
    s3.create_bucket(Bucket="manifests")
    put(s3, "in/a.csv", "out/b.csv")
    binding = bind(COUNT, BUCKET)
    NotificationRule.objects.filter(pk=binding.rule_id).update(prefix="in/")

    call_command("s3tasks_backfill", BUCKET, "--manifest", "s3://manifests/m.csv")

    assert read_manifest(s3, "manifests", "m.csv") == [[BUCKET, "in/a.csv"]]


def test_a_large_manifest_is_streamed_in_parts(aws_clients, monkeypatch):
    import moto.s3.models

    s3, _ = aws_clients
    s3.create_bucket(Bucket="manifests")
    keys = [f"part/{n:04d}-{'x' * 40}.csv" for n in range(60)]
    put(s3, *keys)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 256)
    monkeypatch.setattr(backfill_jobs, "PART_SIZE", 1024)
    uploaded = []
    real_upload = s3.upload_part
    monkeypatch.setattr(s3, "upload_part", lambda **kw: uploaded.append(1) or real_upload(**kw))

    manifest = write_manifest(
        BackfillRequest(BUCKET), S3Location("manifests", "big.csv"), s3=s3, page_size=7
    )

    assert manifest.rows == 60 and len(uploaded) >= 3
    head = s3.head_object(Bucket="manifests", Key="big.csv")
    assert head["ETag"].strip('"') == manifest.etag
    assert [row[1] for row in read_manifest(s3, "manifests", "big.csv")] == keys


def expected_job(manifest_arn: str, etag: str, report_prefix: str) -> dict:
    return {
        "AccountId": "123456789012",
        "ConfirmationRequired": False,
        "Operation": {
            "LambdaInvoke": {
                "FunctionArn": FUNCTION,
                "InvocationSchemaVersion": "2.0",
                "UserArguments": {"handler": COUNT},
            }
        },
        "Report": {
            "Bucket": "arn:aws:s3:::manifests",
            "Format": "Report_CSV_20180820",
            "Enabled": True,
            "ReportScope": "AllTasks",
            "Prefix": report_prefix,
        },
        "Priority": 10,
        "RoleArn": ROLE,
        "Description": f"s3tasks backfill of s3://{BUCKET}/in/ with {COUNT}",
        "Manifest": {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": manifest_arn, "ETag": etag},
        },
        "ClientRequestToken": ANY,
    }


@pytest.fixture
def s3control(monkeypatch):
    """An s3control client whose calls botocore's Stubber answers (and checks)."""
    import boto3

    client = boto3.client("s3control", region_name="us-east-1")
    real_client = aws.client
    monkeypatch.setattr(
        aws, "client", lambda s, **kw: client if s == "s3control" else real_client(s, **kw)
    )
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def test_create_job_invokes_the_lambda_entrypoint_with_the_handler_on_the_written_manifest(
    aws_clients, s3control, capsys
):
    s3, _ = aws_clients
    s3.create_bucket(Bucket="manifests")
    put(s3, "in/a.csv")
    etag = s3.put_object(Bucket="manifests", Key="probe", Body=f"{BUCKET},in/a.csv\n".encode())
    s3control.add_response(
        "create_job",
        {"JobId": "job-1"},
        expected_job("arn:aws:s3:::manifests/jobs/m.csv", etag["ETag"].strip('"'), "jobs/m-report"),
    )

    call_command(
        "s3tasks_backfill",
        BUCKET,
        "--prefix",
        "in/",
        "--handler",
        COUNT,
        "--manifest",
        "s3://manifests/jobs/m.csv",
        "--create-job",
        "--function-arn",
        FUNCTION,
        "--role-arn",
        ROLE,
    )

    assert "Created S3 Batch Operations job job-1" in capsys.readouterr().out


def test_create_job_without_a_manifest_lets_s3_generate_one_from_the_filters(
    aws_clients, s3control
):
    since = datetime(2024, 5, 1, tzinfo=UTC)
    s3control.add_response(
        "create_job",
        {"JobId": "job-2"},
        {
            **{k: v for k, v in expected_job("", "", "").items() if k != "Manifest"},
            "Report": {
                "Bucket": "arn:aws:s3:::reports",
                "Format": "Report_CSV_20180820",
                "Enabled": True,
                "ReportScope": "AllTasks",
                "Prefix": "backfill",
            },
            "ManifestGenerator": {
                "S3JobManifestGenerator": {
                    "SourceBucket": f"arn:aws:s3:::{BUCKET}",
                    "EnableManifestOutput": False,
                    "Filter": {
                        "KeyNameConstraint": {
                            "MatchAnyPrefix": ["in/"],
                            "MatchAnySuffix": [".csv"],
                        },
                        "CreatedAfter": since,
                    },
                }
            },
        },
    )

    call_command(
        "s3tasks_backfill",
        BUCKET,
        "--prefix",
        "in/",
        "--suffix",
        ".csv",
        "--handler",
        COUNT,
        "--modified-since",
        "2024-05-01",
        "--create-job",
        "--function-arn",
        FUNCTION,
        "--role-arn",
        ROLE,
        "--job-report",
        "s3://reports/backfill/",
        "--account-id",
        "123456789012",
    )


def test_an_s3_inventory_manifest_is_used_as_it_is(aws_clients):
    s3, _ = aws_clients
    s3.create_bucket(Bucket="inventory")
    s3.put_object(Bucket="inventory", Key="inv/2024-05-01/manifest.json", Body=b"{}")
    manifest = backfill_jobs.existing_manifest(
        S3Location.parse("s3://inventory/inv/2024-05-01/manifest.json"), s3=s3
    )
    spec = JobSpec(COUNT, FUNCTION, ROLE, "123456789012", S3Location("inventory", "reports"))

    params = create_job_request(spec, BackfillRequest(BUCKET), manifest)

    assert params["Manifest"]["Spec"] == {"Format": "S3InventoryReport_CSV_20161130"}
    assert params["Manifest"]["Location"]["ObjectArn"] == (
        "arn:aws:s3:::inventory/inv/2024-05-01/manifest.json"
    )


def test_the_same_job_request_gets_the_same_client_token_so_a_retry_makes_one_job():
    spec = JobSpec(COUNT, FUNCTION, ROLE, "1", S3Location("r"))
    manifest = Manifest(S3Location("m", "a.csv"), "etag")
    first = create_job_request(spec, BackfillRequest(BUCKET), manifest)
    again = create_job_request(spec, BackfillRequest(BUCKET), manifest)
    other = create_job_request(spec, BackfillRequest(BUCKET), Manifest(manifest.location, "new"))
    assert first["ClientRequestToken"] == again["ClientRequestToken"]
    assert first["ClientRequestToken"] != other["ClientRequestToken"]
    assert len(first["ClientRequestToken"]) <= 64


def test_create_job_needs_one_handler_a_function_and_a_role():
    with pytest.raises(CommandError, match="--function-arn and --role-arn"):
        call_command("s3tasks_backfill", BUCKET, "--create-job", "--handler", COUNT)
    with pytest.raises(CommandError, match="runs one handler"):
        call_command(
            "s3tasks_backfill", BUCKET, "--create-job", "--function-arn", "f", "--role-arn", "r"
        )
    with pytest.raises(BackfillError, match="s3://bucket/key"):
        S3Location.parse("manifests/m.csv", "--manifest")


def test_a_topic_no_queue_subscribes_to_needs_queue(aws_clients):
    s3, _ = aws_clients
    put(s3, "a.csv")
    binding = bind(COUNT, BUCKET)
    NotificationRule.objects.filter(pk=binding.rule_id).update(
        topic=TopicRow.objects.create(name="lonely")
    )
    with pytest.raises(CommandError, match="no queue subscribes to.*--queue"):
        call_command("s3tasks_backfill", BUCKET, "--enqueue")
