"""Metrics scraped over HTTP from real processes (docs/metrics.md): `manage.py sqs_worker
--metrics-port` against moto's server, and a prefork Celery worker on Redis whose pool
processes share `PROMETHEUS_MULTIPROC_DIR`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from s3tasks import testing
from s3tasks.models import HandlerRun, RunState
from s3tasks.processing.dispatch import dispatch_event
from s3tasks.rules.routing import Route
from tests.celery_support import sending_to_redis
from tests.conftest import REDIS_URL, ROOT, need, port_open, subprocess_env
from tests.factories import make_event
from tests.handlers_for_dispatch import RUNS_BUCKET, runs_of
from tests.worker_app.handlers import ALWAYS_FAIL, COUNT
from tests.worker_support import HANDLERS_APP, bind, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUEUE = "metrics-http"
DLQ = "metrics-http-dlq"
OK_BUCKET = "metrics-ok-bucket"
FAIL_BUCKET = "metrics-fail-bucket"
DLQ_VISIBLE = {"queue": QUEUE, "dead_letter_queue": DLQ, "state": "visible"}
SERVING = re.compile(r"serving (?:Celery worker )?metrics on http://[\d.]+:(\d+)/metrics")

Samples = dict[tuple[str, frozenset], float]


def scrape(port: int) -> Samples:
    """GET /metrics, parsed the way Prometheus reads it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def served_port(log: Path) -> int:
    match = SERVING.search(log.read_text(errors="replace"))
    return int(match.group(1)) if match else 0


def recent_body(bucket: str, key: str, seconds_ago: float = 2.0) -> str:
    changed = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return json.dumps({"Records": [testing.s3_record(bucket, key, event_time=changed)]})


@pytest.fixture
def queues(moto_endpoint) -> tuple[str, str]:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    dlq = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = json.dumps({"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": 10})
    url = sqs.create_queue(QueueName=QUEUE, Attributes={"RedrivePolicy": policy})["QueueUrl"]
    return url, dlq


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"


@pytest.fixture
def running_worker(moto_endpoint, queues, worker_log: Path) -> Iterator[subprocess.Popen]:
    env = subprocess_env(
        S3TASKS_ENDPOINT_URL=moto_endpoint, S3TASKS_LOG="none", S3TASKS_EXTRA_APPS=HANDLERS_APP
    )
    args = ["--queue", QUEUE, "--dispatch", "inline", "--wait-time", "1", "--metrics-port", "0"]
    args += ["--metrics-addr", "127.0.0.1", "--metrics-poll", "0.5"]
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "sqs_worker", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield worker
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


def test_sqs_worker_serves_message_run_lag_and_queue_metrics(
    moto_endpoint, queues, worker_log, running_worker
):
    url, dlq = queues
    bind(COUNT, OK_BUCKET)
    bind(ALWAYS_FAIL, FAIL_BUCKET)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=recent_body(OK_BUCKET, f"ok-{i}.csv"))
    sqs.send_message(QueueUrl=url, MessageBody=recent_body(FAIL_BUCKET, "fails.csv"))
    sqs.send_message(QueueUrl=url, MessageBody="not an S3 notification")
    for i in range(2):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"dead {i}")

    port = wait_until(lambda: served_port(worker_log), 60, "the metrics server's log line")
    oldest_seen = 0.0

    def settled() -> Samples | None:
        nonlocal oldest_seen
        samples = scrape(port)
        age = value(samples, "s3tasks_queue_oldest_message_age_seconds", queue=QUEUE) or 0.0
        oldest_seen = max(oldest_seen, age)
        done = value(samples, "s3tasks_handler_runs_total", handler=COUNT, outcome="succeeded")
        dead = value(samples, "s3tasks_dead_letter_queue_messages", **DLQ_VISIBLE)
        return samples if done == 3 and dead == 2 and oldest_seen >= 1.0 else None

    samples = wait_until(settled, 60, "3 runs, 2 DLQ messages and an oldest age", step=0.1)

    def of(name: str, **labels: str) -> float | None:
        return value(samples, name, **labels)

    assert of("s3tasks_messages_received_total", queue=QUEUE) >= 5
    assert of("s3tasks_messages_finished_total", queue=QUEUE, outcome="handled") == 3
    assert of("s3tasks_messages_finished_total", queue=QUEUE, outcome="failed") >= 1
    assert of("s3tasks_messages_finished_total", queue=QUEUE, outcome="malformed") >= 1
    assert of("s3tasks_messages_deleted_total", queue=QUEUE) == 3
    assert of("s3tasks_handler_runs_total", handler=ALWAYS_FAIL, outcome="retrying") >= 1
    assert of("s3tasks_handler_duration_seconds_count", handler=COUNT) == 3
    # the events changed ~2 s before they were sent; lag is measured from then
    assert of("s3tasks_event_lag_seconds_count", handler=COUNT) == 3
    assert 2.0 <= of("s3tasks_event_lag_seconds_sum", handler=COUNT) / 3 < 60
    assert of("s3tasks_event_lag_seconds_bucket", handler=COUNT, le="1.0") == 0
    assert of("s3tasks_event_lag_seconds_bucket", handler=COUNT, le="60.0") == 3
    assert of("s3tasks_event_lag_seconds_count", handler=ALWAYS_FAIL) is None  # still retrying
    assert of("s3tasks_queue_messages", queue=QUEUE, state="visible") is not None
    assert of("s3tasks_messages_in_flight", queue=QUEUE) is not None
    assert of("s3tasks_worker_concurrency") == 4
    assert of("s3tasks_worker_outage") == 0
    info = {"version": "0.1.0", "queues": QUEUE, "dispatch": "inline"}
    assert of("s3tasks_worker_info", **info) == 1
    assert of("process_start_time_seconds") is not None  # the standard process metrics too


def test_sqs_worker_says_when_the_metrics_port_is_taken(moto_endpoint, queues):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = subprocess_env(S3TASKS_ENDPOINT_URL=moto_endpoint, S3TASKS_LOG="none")
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "sqs_worker", "--queue", QUEUE,
             "--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--once"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr


# --- a prefork Celery worker -----------------------------------------------------------------

CELERY_QUEUE = "s3tasks-metrics-tests"


@pytest.fixture
def prefork_worker(tmp_path: Path) -> Iterator[tuple[Path, Path, int]]:
    """Two prefork pool processes sharing a PROMETHEUS_MULTIPROC_DIR: (log, that directory,
    the parent's pid)."""
    need(port_open("127.0.0.1", 6379), "needs Redis on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    shared = tmp_path / "prometheus"
    shared.mkdir()
    log = tmp_path / "celery.log"
    env = subprocess_env(
        CELERY_BROKER_URL=REDIS_URL,
        DJANGO_SETTINGS_MODULE="tests.dispatch_worker_settings",
        PROMETHEUS_MULTIPROC_DIR=str(shared),
        S3TASKS_TEST_METRICS_PORT="0",
    )
    with log.open("wb") as out, sending_to_redis():
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "project", "worker", "--pool=prefork",
             "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel=INFO", "-Q", CELERY_QUEUE,
             "-I", "tests.handlers_for_dispatch,tests.metrics_celery_hook"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield log, shared, worker.pid
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


def test_prefork_celery_worker_serves_the_runs_its_pool_processes_ran(prefork_worker):
    log, shared, parent_pid = prefork_worker
    port = wait_until(lambda: served_port(log), 60, "the Celery metrics line")
    route = Route(handler_name="tests.dispatch.count", celery_queue=CELERY_QUEUE)
    ids = [
        dispatch_event(make_event(f"celery-metrics-{i}.csv"), routes=[route], mode="celery")
        .runs[0]
        .run_id
        for i in range(6)
    ]

    def all_succeeded() -> bool:
        return HandlerRun.objects.filter(pk__in=ids, state=RunState.SUCCEEDED).count() == 6

    wait_until(all_succeeded, 60, "6 runs to succeed in the Celery worker")
    labels = {"handler": "tests.dispatch.count"}

    def counted() -> Samples | None:
        samples = scrape(port)
        runs = value(samples, "s3tasks_handler_runs_total", outcome="succeeded", **labels)
        return samples if runs == 6 else None

    samples = wait_until(counted, 30, "the 6 runs in the Celery worker's metrics")
    assert value(samples, "s3tasks_handler_duration_seconds_count", **labels) == 6
    assert runs_of(RUNS_BUCKET, "celery-metrics-0.csv") == 1
    # counted in the pool processes, each in files of its own, and served by the parent
    writers = {int(p.stem.rsplit("_", 1)[1]) for p in shared.glob("counter_*.db")}
    assert writers and parent_pid not in writers
