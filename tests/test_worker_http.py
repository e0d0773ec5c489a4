"""`manage.py sqs_worker` as a real subprocess against moto's HTTP server.

S3 → SQS (direct, SNS raw, SNS wrapped) → handler; SIGTERM mid-run; kill -9 and restart with
thousands of events; a poison message reaching the DLQ while the worker keeps consuming.
Handler executions are counted in the database (tests/worker_app/handlers.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from s3tasks.models import EventRecord, HandlerRun, MessageFailure, RunState
from tests.conftest import subprocess_env
from tests.worker_app.handlers import COUNT, SLOW_COUNT, runs_per_key
from tests.worker_support import bind, s3_body, start_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUCKET = "worker-http-tests"
QUICK = ["--dispatch", "inline", "--wait-time", "1", "--stats-interval", "2"]


def aws(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def make_queue(sqs, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def queue_counts(sqs, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


def worker_env(endpoint: str, **extra: str) -> dict[str, str]:
    return subprocess_env(S3TASKS_ENDPOINT_URL=endpoint, S3TASKS_DISPATCH="inline", **extra)


def finish(process: subprocess.Popen, log: Path, timeout: float = 60) -> str:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"worker did not exit:\n{log.read_text()[-3000:]}")
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def summary(output: str) -> dict[str, int]:
    line = re.search(r"sqs_worker: (received .*)", output)
    assert line, output[-3000:]
    return {name: int(value) for name, value in re.findall(r"(\w+) (\d+)", line.group(1))}


def test_s3_puts_reach_the_handler_direct_and_via_sns_raw_and_wrapped_with_decoded_keys(
    moto_endpoint, tmp_path
):
    s3, sqs, sns = (aws(s, moto_endpoint) for s in ("s3", "sqs", "sns"))
    s3.create_bucket(Bucket=BUCKET)
    direct_url, direct_arn = make_queue(sqs, "worker-direct")
    raw_url, raw_arn = make_queue(sqs, "worker-sns-raw")
    wrapped_url, wrapped_arn = make_queue(sqs, "worker-sns-wrapped")
    raw_topic = sns.create_topic(Name="worker-raw")["TopicArn"]
    wrapped_topic = sns.create_topic(Name="worker-wrapped")["TopicArn"]
    sns.subscribe(
        TopicArn=raw_topic,
        Protocol="sqs",
        Endpoint=raw_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    sns.subscribe(TopicArn=wrapped_topic, Protocol="sqs", Endpoint=wrapped_arn)

    def prefix(value: str) -> dict:
        return {"Key": {"FilterRules": [{"Name": "prefix", "Value": value}]}}

    events = ["s3:ObjectCreated:*"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": direct_arn, "Events": events, "Filter": prefix("direct/")}
            ],
            "TopicConfigurations": [
                {"TopicArn": raw_topic, "Events": events, "Filter": prefix("raw/")},
                {"TopicArn": wrapped_topic, "Events": events, "Filter": prefix("wrapped/")},
            ],
        },
    )
    bind(COUNT, BUCKET)
    names = ["with space.txt", "plus+sign.csv", "ünïcødé/ファイル 1.txt"]
    keys = [f"{p}/{n}" for p in ("direct", "raw", "wrapped") for n in names]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"abc")

    log = tmp_path / "worker.log"
    queues = ["--queue", "worker-direct", "--queue", raw_url, "--queue", "worker-sns-wrapped"]
    worker = start_worker(
        worker_env(moto_endpoint), *QUICK, *queues, "--exit-when-idle", "3", log=log
    )
    output = finish(worker, log)

    assert runs_per_key() == dict.fromkeys(keys, 1)
    assert sorted(EventRecord.objects.values_list("key", flat=True)) == sorted(keys)
    assert summary(output)["failed"] == 0
    for url in (direct_url, raw_url, wrapped_url):
        assert queue_counts(sqs, url) == (0, 0)  # handled and s3:TestEvent messages deleted


def test_sigterm_finishes_in_flight_work_loses_nothing_and_receives_nothing_after(
    moto_endpoint, tmp_path
):
    sqs = aws("sqs", moto_endpoint)
    url, _ = make_queue(sqs, "worker-sigterm")
    keys = [f"slow/{i}.txt" for i in range(12)]
    for key in keys:
        sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, key))
    bind(SLOW_COUNT, BUCKET)
    log = tmp_path / "worker.log"
    started = tmp_path / "started"
    started.mkdir()
    env = worker_env(moto_endpoint, WORKER_TEST_SLEEP="1.5", WORKER_TEST_STARTED_DIR=str(started))
    worker = start_worker(
        env, *QUICK, "--queue", url, "--concurrency", "2", "--batch-size", "2", log=log
    )
    # Both workers busy for 1.5 s: nothing more is received until one finishes. Held by SQS
    # is not enough: the signal must come once the handlers started (a receive still under
    # way is handed back unstarted, as the end of this test checks).
    held = wait_until(lambda: queue_counts(sqs, url)[1], 30, "the worker to hold messages")
    assert held == 2
    wait_until(lambda: any(started.iterdir()), 30, "a handler to start", step=0.02)
    signalled_at = datetime.now(UTC)
    worker.send_signal(signal.SIGTERM)
    output = finish(worker, log, timeout=30)
    done = summary(output)

    runs = HandlerRun.objects.filter(handler_name=SLOW_COUNT)
    assert done["handled"] == done["deleted"] == runs.count() >= 2
    assert set(runs.values_list("state", flat=True)) == {RunState.SUCCEEDED}
    assert done["received"] == held  # no receive after the signal
    assert all(run.finished_at > signalled_at for run in runs)  # in-flight work finished
    assert all(count == 1 for count in runs_per_key().values())
    visible, hidden = queue_counts(sqs, url)
    assert (visible, hidden) == (len(keys) - done["handled"], 0)  # the rest left, visible
    leftover = []
    while batch := sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    ).get("Messages"):
        leftover += [int(m["Attributes"]["ApproximateReceiveCount"]) for m in batch]
    assert len(leftover) == len(keys) - done["handled"]
    # A receive that was already under way when the signal came is handed back unstarted.
    assert sum(1 for n in leftover if n > 1) == done["released"]


def test_kill_9_mid_run_then_restart_handles_every_event_exactly_once(moto_endpoint, tmp_path):
    sqs = aws("sqs", moto_endpoint)
    # 2,000 events, 10 per message, over 4 shallow queues (moto slows down with depth).
    queues = [make_queue(sqs, f"worker-crash-{n}")[0] for n in range(4)]
    keys = [f"crash/{i:05d}.txt" for i in range(2000)]
    for m in range(200):
        chunk = keys[m * 10 : (m + 1) * 10]
        sqs.send_message(QueueUrl=queues[m % 4], MessageBody=s3_body(BUCKET, *chunk))
    bind(COUNT, BUCKET)
    args = [*QUICK, *sum((["--queue", q] for q in queues), []), "--visibility-timeout", "4"]
    log = tmp_path / "first.log"
    first = start_worker(worker_env(moto_endpoint), *args, "--concurrency", "4", log=log)
    wait_until(lambda: sum(runs_per_key().values()) >= 600, 60, "600 handled events", step=0.2)
    first.kill()  # SIGKILL: no cleanup, messages held mid-batch
    first.wait(10)
    handled_before = sum(runs_per_key().values())
    assert handled_before < len(keys), "the first worker finished before it could be killed"

    log = tmp_path / "second.log"
    second = start_worker(
        worker_env(moto_endpoint), *args, "--concurrency", "4", "--exit-when-idle", "6", log=log
    )
    finish(second, log, timeout=120)

    counts = runs_per_key()
    assert len(counts) == len(keys)
    assert set(counts.values()) == {1}  # every event's handler ran exactly once
    assert EventRecord.objects.count() == len(keys)
    assert HandlerRun.objects.filter(state=RunState.SUCCEEDED).count() == len(keys)
    assert all(queue_counts(sqs, q) == (0, 0) for q in queues)


def test_poison_message_reaches_the_dlq_and_the_worker_keeps_consuming(moto_endpoint, tmp_path):
    sqs = aws("sqs", moto_endpoint)
    dlq_url, dlq_arn = make_queue(sqs, "worker-poison-dlq")
    policy = json.dumps({"maxReceiveCount": "2", "deadLetterTargetArn": dlq_arn})
    url, _ = make_queue(sqs, "worker-poison", RedrivePolicy=policy)
    sqs.send_message(QueueUrl=url, MessageBody="this is not an S3 event")
    bind(COUNT, BUCKET)
    log = tmp_path / "worker.log"
    worker = start_worker(
        worker_env(moto_endpoint), *QUICK, "--queue", url, "--max-backoff", "0", log=log
    )
    wait_until(lambda: queue_counts(sqs, dlq_url)[0] == 1, 40, "the poison message in the DLQ")
    sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, "after/poison.txt"))
    wait_until(lambda: runs_per_key().get("after/poison.txt"), 30, "the next message handled")
    assert worker.poll() is None  # still up
    worker.send_signal(signal.SIGTERM)
    output = finish(worker, log, timeout=30)

    failure = MessageFailure.objects.get(queue_name="worker-poison")
    assert failure.receive_count == 2 and "this is not an S3 event" in failure.body_excerpt
    assert failure.message_id in output  # logged with its id and reason
    assert summary(output)["malformed"] == 2
    assert queue_counts(sqs, url) == (0, 0)


def test_heartbeat_keeps_a_long_handler_s_message_hidden_so_it_is_received_once(
    moto_endpoint, tmp_path
):
    sqs = aws("sqs", moto_endpoint)
    url, _ = make_queue(sqs, "worker-heartbeat")
    sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, "long/handler.txt"))
    bind(SLOW_COUNT, BUCKET)
    log = tmp_path / "worker.log"
    env = worker_env(moto_endpoint, WORKER_TEST_SLEEP="4")
    worker = start_worker(
        env, *QUICK, "--queue", url, "--visibility-timeout", "2", "--exit-when-idle", "2", log=log
    )
    done = summary(finish(worker, log, timeout=40))
    assert done["received"] == 1  # without the heartbeat it would be back after 2 s
    assert runs_per_key() == {"long/handler.txt": 1}
    assert queue_counts(sqs, url) == (0, 0)


def test_second_signal_exits_at_once_and_the_message_comes_back(moto_endpoint, tmp_path):
    sqs = aws("sqs", moto_endpoint)
    url, _ = make_queue(sqs, "worker-force")
    sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, "force/exit.txt"))
    bind(SLOW_COUNT, BUCKET)
    log = tmp_path / "worker.log"
    env = worker_env(moto_endpoint, WORKER_TEST_SLEEP="30")
    worker = start_worker(env, *QUICK, "--queue", url, "--visibility-timeout", "3", log=log)
    wait_until(lambda: queue_counts(sqs, url)[1] == 1, 30, "the worker to hold the message")
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: "SIGTERM received" in log.read_text(), 10, "the first signal logged")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 1
    assert "second SIGTERM, exiting now" in log.read_text()
    assert runs_per_key() == {}  # the interrupted handler's writes were rolled back
    # Not extended any more: visible again within the visibility timeout, for another worker.
    wait_until(lambda: queue_counts(sqs, url) == (1, 0), 15, "the message visible again")
