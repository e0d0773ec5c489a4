"""Helpers shared by the worker tests and benchmark: S3 message bodies, rule rows, a worker
subprocess, polling until something is true, and the worker loop on the in-memory SQS with a
stand-in for `process_message`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from s3tasks import testing
from s3tasks.processing.messages import InboundMessage, MessageOutcome, Status
from s3tasks.worker import Consumer, SqsQueueClient, WorkerOptions
from s3tasks.worker.memory_sqs import MemorySQS

ROOT = Path(__file__).resolve().parent.parent
HANDLERS_APP = "tests.worker_app"
EVENT_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def s3_record(bucket: str, key: str, *, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One S3 notification record as S3 sends it (key URL-encoded, unique sequencer)."""
    return testing.s3_record(
        bucket,
        key,
        event_name=event_name,
        size=3,
        etag="acbd18db4cc2f85cedef654fccc4a4d8",
        event_time=EVENT_TIME,
    )


def s3_body(bucket: str, *keys: str) -> str:
    """An SQS message body holding one S3 record per key."""
    return json.dumps({"Records": [s3_record(bucket, key) for key in keys]})


def bind(handler_name: str, bucket: str, *, events: tuple[str, ...] = ("s3:ObjectCreated:*",)):
    """Route `bucket`'s events to `handler_name` (the rows an admin user would create)."""
    from s3tasks.models import Bucket, HandlerBinding, NotificationRule

    row, _ = Bucket.objects.get_or_create(name=bucket)
    rule = NotificationRule.objects.create(bucket=row, events=list(events))
    return HandlerBinding.objects.create(rule=rule, handler_name=handler_name)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def start_worker(
    env: dict[str, str], *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`manage.py sqs_worker ARGS` as a subprocess, its output going to `log`."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed by the OS)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "sqs_worker", *args],
        cwd=ROOT,
        env={**env, "S3TASKS_EXTRA_APPS": HANDLERS_APP},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


# --- the worker loop on the in-memory SQS ---------------------------------------------------

QUICK = {"wait_time": 0, "exit_when_idle": 0.3, "stats_interval": 60.0}


class Recorder:
    """A stand-in for `process_message`: records calls and concurrency, answers per body."""

    def __init__(self, delay: float = 0.0, answers: dict[str, list[str]] | None = None) -> None:
        self.delay = delay
        self.answers = answers or {}
        self.calls: list[InboundMessage] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, message: InboundMessage, dispatch_mode: str | None = None) -> MessageOutcome:
        with self._lock:
            self.calls.append(message)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            planned = self.answers.get(str(message.body))
            status = planned.pop(0) if planned else Status.HANDLED
        time.sleep(self.delay)
        with self._lock:
            self.running -= 1
        return MessageOutcome(message.message_id, status, events=1, error="planned")


def make_queue(sqs: MemorySQS, name: str = "jobs", **attributes: str) -> str:
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def consumer(sqs: MemorySQS, process, *names: str, **options) -> Consumer:
    client = SqsQueueClient(sqs)
    queues = [client.resolve(n) for n in (names or ("jobs",))]
    return Consumer(client, queues, WorkerOptions(**{**QUICK, **options}), process=process)
