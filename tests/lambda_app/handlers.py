"""Handlers the Lambda tests bind to rules or name in Batch Operations jobs."""

from __future__ import annotations

import json

from s3tasks import PermanentFailure, S3Event, TemporaryFailure, s3_handler

# Calls seen in this process (the subprocess tests read the run records instead).
CALLS: list[tuple[str, str]] = []


@s3_handler(name="lambda_tests.record")
def record(event: S3Event) -> str:
    CALLS.append(("record", event.key))
    return f"handled {event.key}"


@s3_handler(name="lambda_tests.explode")
def explode(event: S3Event) -> None:
    CALLS.append(("explode", event.key))
    raise RuntimeError(f"cannot handle {event.key}")


@s3_handler(name="lambda_tests.noop")
def noop(event: S3Event) -> None:
    """What the warm-overhead benchmark runs: nothing but the bookkeeping around it."""


@s3_handler(name="lambda_tests.batch")
def batch_task(event: S3Event) -> str:
    """Behaves as the object key says, so one job can exercise every result code."""
    CALLS.append(("batch", event.key))
    if "temporary" in event.key:
        raise TemporaryFailure("throttled, try again")
    if "permanent" in event.key:
        raise PermanentFailure("not an image")
    if "missing" in event.key:
        raise FileNotFoundError(f"s3://{event.bucket}/{event.key}")
    if "crash" in event.key:
        raise ValueError("unexpected")
    arguments = event.batch.user_arguments if event.batch else {}
    return json.dumps({"key": event.key, "arguments": arguments}, sort_keys=True)


@s3_handler(name="lambda_tests.batch_default")
def batch_default(event: S3Event) -> str:
    CALLS.append(("batch_default", event.key))
    return "default handler"


@s3_handler(name="lambda_tests.read")
def read_object(event: S3Event) -> str:
    """Reads the object through django-storages, as a real Batch Operations job would."""
    with event.open("rb") as body:
        return f"{len(body.read())} bytes"
