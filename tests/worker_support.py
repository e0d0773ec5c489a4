"""Helpers shared by the worker tests and benchmark: S3 message bodies, rule rows, a worker
subprocess, and polling until something is true."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
HANDLERS_APP = "tests.worker_app"
_sequence = itertools.count(1)


def s3_record(bucket: str, key: str, *, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One S3 notification record as S3 sends it (key URL-encoded, unique sequencer)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-01-02T03:04:05.000Z",
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "s3tasks-test",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": 3,
                "eTag": "acbd18db4cc2f85cedef654fccc4a4d8",
                "sequencer": f"{next(_sequence):016X}",
            },
        },
    }


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
