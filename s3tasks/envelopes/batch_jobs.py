"""S3 Batch Operations invocations (schema 1.0 and 2.0): one event per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3tasks.envelopes.fields import excerpt, one_of, optional_str, required, type_name
from s3tasks.envelopes.limits import checked_event
from s3tasks.envelopes.s3 import decode_key
from s3tasks.envelopes.shapes import MessageKind, ParsedMessage
from s3tasks.events import BATCH_OPERATIONS_EVENT_NAME, BatchJobTask, EventSource, S3Event
from s3tasks.exceptions import MalformedMessage

_SCHEMA_VERSIONS = ("1.0", "2.0")


def parse_batch_operations(document: Mapping[str, Any], where: str) -> ParsedMessage:
    """Each task becomes an `S3Event` carrying its `BatchJobTask` (ids needed for the reply)."""
    version_where = f"{where}.invocationSchemaVersion"
    version = one_of(document.get("invocationSchemaVersion"), _SCHEMA_VERSIONS, version_where)
    invocation_id = required(document, "invocationId", where, str)
    job = required(document, "job", where, Mapping)
    job_id = required(job, "id", f"{where}.job", str)
    user_arguments = job.get("userArguments") or {}
    if not isinstance(user_arguments, Mapping):
        raise MalformedMessage(f"{where}.job.userArguments: expected an object")
    events = []
    for i, task in enumerate(required(document, "tasks", where, list)):
        task_where = f"{where}.tasks[{i}]"
        if not isinstance(task, Mapping):
            raise MalformedMessage(f"{task_where}: expected an object, found {type_name(task)}")
        task_id = required(task, "taskId", task_where, str)
        batch = BatchJobTask(version, invocation_id, task_id, job_id, dict(user_arguments))
        event = S3Event(
            bucket=_bucket(task, task_where, version),
            # "keys from S3 Batch Operations are URL encoded" (S3 User Guide, Invoke Lambda)
            key=decode_key(required(task, "s3Key", task_where, str), f"{task_where}.s3Key"),
            event_name=BATCH_OPERATIONS_EVENT_NAME,
            version_id=optional_str(task, "s3VersionId", task_where),
            source=EventSource.BATCH_OPERATIONS,
            raw=dict(task),
            batch=batch,
        )
        events.append(checked_event(event, task_where))
    return ParsedMessage(MessageKind.BATCH_OPERATIONS, tuple(events))


def _bucket(task: Mapping[str, Any], where: str, version: str) -> str:
    """Schema 2.0 names the bucket (`s3Bucket`); 1.0 gives its ARN (`s3BucketArn`)."""
    if task.get("s3Bucket") is not None:
        return required(task, "s3Bucket", where, str)
    if task.get("s3BucketArn") is None:
        expected = "s3BucketArn" if version == "1.0" else "s3Bucket"
        raise MalformedMessage(f"{where}: missing required field {expected!r}")
    arn = required(task, "s3BucketArn", where, str)
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "s3" and parts[5]:
        return parts[5]
    raise MalformedMessage(f"{where}.s3BucketArn is {excerpt(arn)}; expected arn:aws:s3:::<bucket>")
