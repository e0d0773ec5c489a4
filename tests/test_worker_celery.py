"""`sqs_worker --dispatch celery` with a real Celery worker on Redis: the SQS message is
deleted once its tasks are with the broker, and the Celery worker runs each handler once."""

from __future__ import annotations

import subprocess
import sys

import boto3
import pytest

from s3tasks.models import HandlerRun, RunState
from tests.conftest import ROOT, subprocess_env
from tests.worker_app.handlers import COUNT, runs_per_key
from tests.worker_support import HANDLERS_APP, bind, s3_body, start_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUCKET = "worker-celery-tests"


def test_celery_dispatch_hands_events_to_a_real_celery_worker_and_deletes_messages(
    moto_endpoint, redis_url, tmp_path
):
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName="worker-celery")["QueueUrl"]
    keys = [f"celery/{i}.txt" for i in range(20)]
    bodies = [s3_body(BUCKET, *keys[i : i + 2]) for i in range(0, 20, 2)]
    for body in [*bodies, bodies[0]]:  # the first message is delivered twice
        sqs.send_message(QueueUrl=url, MessageBody=body)
    bind(COUNT, BUCKET)
    env = subprocess_env(
        S3TASKS_ENDPOINT_URL=moto_endpoint,
        CELERY_BROKER_URL=redis_url,
        S3TASKS_EXTRA_APPS=HANDLERS_APP,
    )
    celery_log = tmp_path / "celery.log"
    celery = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-P",
            "threads",
            "-c",
            "2",
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(celery_log, "wb"),  # noqa: SIM115 (closed with the process)
        stderr=subprocess.STDOUT,
    )
    log = tmp_path / "worker.log"
    args = ["--queue", url, "--dispatch", "celery", "--wait-time", "1", "--exit-when-idle", "3"]
    try:
        worker = start_worker(env, *args, log=log)
        assert worker.wait(60) == 0, log.read_text()[-3000:]
        assert "received 11" in log.read_text() and "deleted 11" in log.read_text()
        wait_until(lambda: len(runs_per_key()) == len(keys), 60, "the Celery worker's runs")
    finally:
        celery.terminate()
        celery.wait(20)
    assert set(runs_per_key().values()) == {1}
    runs = HandlerRun.objects.all()
    assert runs.count() == len(keys) and all(run.celery_task_id for run in runs)
    assert set(runs.values_list("state", flat=True)) == {RunState.SUCCEEDED}
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (
        attrs["ApproximateNumberOfMessages"]
        == attrs["ApproximateNumberOfMessagesNotVisible"]
        == "0"
    )
