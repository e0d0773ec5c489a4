"""The queue panel of the operations dashboard against moto's HTTP server: each queue's and
its dead-letter queue's depth (SQS) and oldest message age (CloudWatch), an "unavailable:
<reason>" cell when AWS cannot be reached or answers an error, the short timeout, and the
few seconds the figures are kept."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from django.utils import timezone

from s3tasks import aws
from s3tasks.models import NotificationRule, Queue
from s3tasks.ops import queue_depths
from s3tasks.ops.queue_depths import forget_queue_depths, read_queue_depths, watched_queues
from tests.admin_support import login_staff

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

URL = "/admin/s3tasks/operationsdashboard/"


@pytest.fixture(autouse=True)
def fresh_figures():
    forget_queue_depths()
    yield
    forget_queue_depths()


@pytest.fixture
def viewer(client, django_user_model):
    return login_staff(client, django_user_model, "s3tasks.view_handlerrun")


def sqs_client(endpoint: str):
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def make_queues(endpoint: str, *, rows: bool = True) -> tuple[str, str]:
    """Queue "jobs" whose dead-letter queue is "jobs-dlq", in moto and (unless `rows` is
    False) as rows; returns both URLs."""
    sqs = sqs_client(endpoint)
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = {"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": 5}
    url = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": json.dumps(policy)})
    if rows:
        dead_letter = Queue.objects.create(name="jobs-dlq", enabled=False)
        Queue.objects.create(name="jobs", dead_letter_queue=dead_letter)
    return url["QueueUrl"], dlq


def oldest_age(endpoint: str, queue: str, seconds: float) -> None:
    """What AWS publishes each minute for a queue (moto publishes nothing by itself)."""
    cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1")
    cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": queue}],
                "Value": seconds,
                "Unit": "Seconds",
                "Timestamp": timezone.now() - timedelta(seconds=30),  # a minute's datapoint
            }
        ],
    )


def queue_row(html: str, name: str) -> str:
    found = re.search(rf'<tr data-queue="{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert found, f"no row for queue {name}"
    return found.group(1)


def numbers(row_html: str, css: str) -> list[str]:
    return [v.strip() for v in re.findall(rf'class="num {css}[^"]*"[^>]*>([^<]*)<', row_html)]


def test_each_queue_shows_its_depth_and_its_dead_letter_queues(viewer, moto_endpoint):
    url, dlq = make_queues(moto_endpoint)
    sqs = sqs_client(moto_endpoint)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=120)
    for i in range(2):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"dead{i}")
    oldest_age(moto_endpoint, "jobs", 42)
    oldest_age(moto_endpoint, "jobs-dlq", 3900)
    html = viewer.get(URL).content.decode()
    row = queue_row(html, "jobs")
    assert numbers(row, "s3tasks-waiting") == ["2", "2"]  # the queue, its dead-letter queue
    assert numbers(row, "s3tasks-in-flight") == ["1"]
    assert numbers(row, "s3tasks-age") == ["42 s", "1 h 5 min"]
    assert ">jobs-dlq</td>" in row
    assert 'class="num s3tasks-waiting bad">2<' in row  # dead letters need a human
    assert re.search(r'id="s3tasks-summary-dead-letters" class="bad"><strong>2<', html)
    assert 'data-queue="jobs-dlq"' not in html  # shown beside its queue, not as a queue


def test_without_a_cloudwatch_datapoint_the_age_is_unknown_not_an_error(viewer, moto_endpoint):
    make_queues(moto_endpoint)
    row = queue_row(viewer.get(URL).content.decode(), "jobs")
    assert numbers(row, "s3tasks-age") == ["—", "—"]
    assert "unavailable" not in row


def test_the_dead_letter_queue_comes_from_sqs_when_the_row_names_none(moto_endpoint):
    make_queues(moto_endpoint, rows=False)
    Queue.objects.create(name="jobs")
    [found] = [f for f in read_queue_depths(watched_queues()) if f.queue.name == "jobs"]
    assert (found.queue.name, found.dead_letter.name) == ("jobs", "jobs-dlq")
    assert (found.queue.waiting, found.dead_letter.waiting) == (0, 0)


def test_without_queue_rows_the_default_queue_is_shown(moto_endpoint):
    NotificationRule.objects.all().delete()  # the demo's rules, which name the default queue
    Queue.objects.all().delete()
    sqs_client(moto_endpoint).create_queue(QueueName="s3tasks-events")
    [found] = read_queue_depths(watched_queues())
    assert (found.queue.name, found.queue.waiting, found.dead_letter) == (
        "s3tasks-events",
        0,
        None,
    )


def test_a_queue_missing_in_sqs_says_so_and_the_others_are_still_read(viewer, moto_endpoint):
    make_queues(moto_endpoint)
    Queue.objects.create(name="ghost")
    html = viewer.get(URL).content.decode()
    ghost = queue_row(html, "ghost")
    assert re.search(r'class="s3tasks-unavailable"[^>]*>unavailable: .*NonExistentQueue', ghost)
    assert numbers(queue_row(html, "jobs"), "s3tasks-waiting") == ["0", "0"]


def test_when_aws_cannot_be_reached_each_cell_says_why(viewer, settings, aws_credentials):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once the socket is closed
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    dead_letter = Queue.objects.create(name="jobs-dlq")
    Queue.objects.create(name="jobs", dead_letter_queue=dead_letter)
    Queue.objects.create(name="other")
    response = viewer.get(URL)
    html = response.content.decode()
    assert response.status_code == 200
    for name in ("jobs", "other"):
        assert "unavailable: Could not connect to the endpoint URL" in queue_row(html, name)
    assert "jobs-dlq" in queue_row(html, "jobs")  # its row still names it


def test_a_silent_endpoint_costs_one_short_timeout_not_one_per_queue(settings, aws_credentials):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are accepted by the kernel and never answered
    try:
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": endpoint}
        for name in ("a", "b", "c"):
            Queue.objects.create(name=name, url=f"{endpoint}/123456789012/{name}")
        began = time.monotonic()
        found = read_queue_depths(watched_queues())
        elapsed = time.monotonic() - began
    finally:
        silent.close()
    assert elapsed < queue_depths.READ_TIMEOUT + 2
    assert all("timeout" in f.queue.problem.lower() for f in found), [f.queue for f in found]


def test_figures_are_kept_a_few_seconds(moto_endpoint, monkeypatch):
    url, _dlq = make_queues(moto_endpoint)
    sqs = sqs_client(moto_endpoint)
    sqs.send_message(QueueUrl=url, MessageBody="one")
    assert read_queue_depths(watched_queues())[0].queue.waiting == 1
    sqs.send_message(QueueUrl=url, MessageBody="two")
    assert read_queue_depths(watched_queues())[0].queue.waiting == 1  # within CACHE_SECONDS
    monkeypatch.setattr(queue_depths, "CACHE_SECONDS", 0.0)
    assert read_queue_depths(watched_queues())[0].queue.waiting == 2


def test_an_age_cloudwatch_refuses_is_unavailable_with_the_reason(
    viewer, moto_endpoint, monkeypatch
):
    make_queues(moto_endpoint)
    real_client = aws.client

    class Refusing:
        def get_metric_data(self, **kwargs):
            error = {"Code": "AccessDenied", "Message": "not authorized to GetMetricData"}
            raise ClientError({"Error": error}, "GetMetricData")

    def client(service, **kwargs):
        return Refusing() if service == "cloudwatch" else real_client(service, **kwargs)

    monkeypatch.setattr(aws, "client", client)
    html = viewer.get(URL).content.decode()
    row = queue_row(html, "jobs")
    assert numbers(row, "s3tasks-waiting") == ["0", "0"]  # SQS answered
    assert numbers(row, "s3tasks-age") == ["unavailable", "unavailable"]
    assert "Oldest message ages unavailable: AccessDenied: not authorized to GetMetricData" in html
