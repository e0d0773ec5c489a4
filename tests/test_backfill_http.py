"""`manage.py s3tasks_backfill` against moto's HTTP server: more than 1,000 objects (so the
listing pages) with awkward keys, enqueued and run by two `sqs_worker` processes exactly once;
then the same backfill inline runs nothing again."""

from __future__ import annotations

import re
import subprocess
from io import StringIO
from pathlib import Path

import boto3
import pytest
from django.core.management import call_command

from s3tasks.models import Backfill, EventRecord, HandlerRun, NotificationRule, Queue, RunState
from tests.conftest import subprocess_env
from tests.worker_app.handlers import COUNT, runs_per_key
from tests.worker_support import bind, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUCKET = "backfill-http"
QUEUE = "backfill-http-events"
AWKWARD = ["with space.csv", "plus+sign.csv", "ünïcødé/ファイル 1.csv", "100%25 sure.csv"]


def finish(process: subprocess.Popen, log: Path, timeout: float = 120) -> dict[str, int]:
    """Wait for a worker; its final counters (`received 3 handled 3 …`)."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"worker did not exit:\n{log.read_text()[-3000:]}")
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    line = re.search(r"sqs_worker: (received .*)", output)
    assert line, output[-3000:]
    return {name: int(value) for name, value in re.findall(r"(\w+) (\d+)", line.group(1))}


def test_two_workers_run_an_enqueued_backfill_exactly_once_and_inline_then_runs_nothing(
    moto_endpoint, tmp_path
):
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    sqs.create_queue(QueueName=QUEUE)
    keys = [f"in/{n:04d}.csv" for n in range(1010)] + [f"in/{k}" for k in AWKWARD]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"abc")
    binding = bind(COUNT, BUCKET)
    NotificationRule.objects.filter(pk=binding.rule_id).update(
        queue=Queue.objects.create(name=QUEUE)
    )
    env = subprocess_env(S3TASKS_ENDPOINT_URL=moto_endpoint, S3TASKS_DISPATCH="inline")
    args = ["--queue", QUEUE, "--wait-time", "1", "--stats-interval", "5"]
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    workers = [start_worker(env, *args, "--exit-when-idle", "8", log=log) for log in logs]

    out = StringIO()
    call_command("s3tasks_backfill", BUCKET, "--enqueue", stdout=out)

    row = Backfill.objects.get()
    assert (row.state, row.pages, row.listed, row.dispatched) == ("completed", 2, 1014, 1014)
    done = [finish(worker, log) for worker, log in zip(workers, logs, strict=True)]
    # a message SQS delivers twice is handled twice; its handler still runs once
    assert sum(d["handled"] for d in done) >= 1014
    assert all(d["handled"] for d in done), done  # both workers took part
    assert runs_per_key() == dict.fromkeys(keys, 1)
    assert set(EventRecord.objects.values_list("source", flat=True)) == {"backfill"}
    assert HandlerRun.objects.filter(state=RunState.SUCCEEDED).count() == 1014

    out = StringIO()
    call_command("s3tasks_backfill", BUCKET, "--dispatch", "inline", stdout=out)

    again = Backfill.objects.order_by("pk").last()
    assert (again.listed, again.matched, again.dispatched, again.skipped) == (1014, 1014, 0, 1014)
    assert runs_per_key() == dict.fromkeys(keys, 1)
