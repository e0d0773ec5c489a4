"""Two `sqs_worker` processes on one queue with every message delivered twice, on PostgreSQL:
each (event, handler) must run exactly once (the database, not memory, decides)."""

from __future__ import annotations

import boto3
import pytest

from s3tasks.models import EventRecord, HandlerRun, RunState
from tests.conftest import subprocess_env
from tests.worker_app.handlers import COUNT, runs_per_key
from tests.worker_support import bind, s3_body, start_worker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]

BUCKET = "worker-pg-tests"


def test_two_workers_with_duplicated_deliveries_run_each_event_handler_once(
    moto_endpoint, tmp_path
):
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName="worker-pg-duplicates")["QueueUrl"]
    keys = [f"dup/{i:04d}.txt" for i in range(600)]
    for m in range(150):
        body = s3_body(BUCKET, *keys[m * 4 : (m + 1) * 4])
        entries = [{"Id": "0", "MessageBody": body}, {"Id": "1", "MessageBody": body}]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)  # the same message twice
    bind(COUNT, BUCKET)
    env = subprocess_env(S3TASKS_ENDPOINT_URL=moto_endpoint, S3TASKS_DISPATCH="inline")
    args = ["--queue", url, "--dispatch", "inline", "--wait-time", "1", "--concurrency", "4"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(env, *args, "--exit-when-idle", "4", log=log) for log in logs]
    for worker, log in zip(workers, logs, strict=True):
        worker.wait(150)
        assert worker.returncode == 0, log.read_text()[-3000:]

    counts = runs_per_key()
    assert len(counts) == len(keys)
    assert set(counts.values()) == {1}
    assert EventRecord.objects.count() == len(keys)
    assert HandlerRun.objects.filter(state=RunState.SUCCEEDED).count() == len(keys)
    both = [log.read_text() for log in logs]
    assert all("handled" in text for text in both)
    handled = [int(text.rsplit("handled ", 1)[1].split(",")[0]) for text in both]
    assert sum(handled) >= 300 and all(h > 0 for h in handled)  # both took part
