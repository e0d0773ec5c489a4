"""`S3Event`: the one normalized value every envelope is turned into."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum, nonmember
from typing import IO, Any


class EventSource(StrEnum):
    """Which envelope an event arrived in (the values are stored in the database)."""

    S3 = "s3"  # a plain S3 notification (SQS direct, SNS raw delivery, Lambda S3 trigger)
    SNS = "sns"  # wrapped in an SNS Notification (SQS subscription or Lambda SNS trigger)
    EVENTBRIDGE = "eventbridge"
    BATCH_OPERATIONS = "batch_operations"
    ADMIN = "admin"  # sent from the admin's "send test event" action
    BACKFILL = "backfill"  # an object already in the bucket, listed by `s3tasks_backfill`
    UNKNOWN = "unknown"

    # (value, label) pairs for `EventRecord.source` (not a member)
    CHOICES = nonmember(
        [
            (S3, "S3 notification"),
            (SNS, "SNS notification"),
            (EVENTBRIDGE, "EventBridge"),
            (BATCH_OPERATIONS, "S3 Batch Operations"),
            (ADMIN, "Admin test event"),
            (BACKFILL, "Backfill"),
            (UNKNOWN, "Unknown"),
        ]
    )


BATCH_OPERATIONS_EVENT_NAME = "BatchOperations:Invoke"
# A backfill's S3-shaped record carries `{"s3tasks": {"backfill": id, "handlers": [...]}}`
# beside S3's own fields: how the worker tells an enqueued backfill event from a notification.
BACKFILL_RECORD_KEY = "s3tasks"


@dataclass(frozen=True)
class BatchJobTask:
    """The S3 Batch Operations context of an event (one `tasks[]` entry of an invocation)."""

    schema_version: str
    invocation_id: str
    task_id: str
    job_id: str = ""
    user_arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class S3Event:
    """One change to one object, whatever envelope it came in.

    `key` is already URL-decoded (exactly once, by the envelope parser); `event_name` has
    the `ObjectCreated:Put` form (no `s3:` prefix).
    """

    bucket: str
    key: str
    event_name: str
    event_time: datetime | None = None
    size: int | None = None
    etag: str = ""
    version_id: str = ""
    sequencer: str = ""
    region: str = ""
    source: str = EventSource.UNKNOWN
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    batch: BatchJobTask | None = None

    @property
    def dedup_key(self) -> str:
        """A stable id for this distinct event: equal for redeliveries of the same change.

        Built from bucket, key, version, sequencer and event name. moto omits `sequencer`
        (real S3 always sends it), so then the ETag and event time stand in for it. A backfill
        event is one per object version (its version id, else its ETag), whichever backfill
        listed it, so running a backfill again runs nothing twice.
        """
        if self.batch is not None:
            change = f"batch:{self.batch.job_id}:{self.batch.task_id}"
        elif self.source == EventSource.BACKFILL:
            change = f"backfill:{self.etag}"
        elif self.sequencer:
            change = self.sequencer
        else:
            when = self.event_time.isoformat() if self.event_time else ""
            change = f"{self.etag}@{when}"
        parts = (self.bucket, self.key, self.version_id, change, self.event_name)
        return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()

    @property
    def backfill_handlers(self) -> tuple[str, ...]:
        """The handlers a backfill named (`--handler`); empty: the rules decide."""
        if self.source != EventSource.BACKFILL:
            return ()
        marker = self.raw.get(BACKFILL_RECORD_KEY)
        handlers = marker.get("handlers") if isinstance(marker, dict) else None
        return tuple(handlers) if isinstance(handlers, list) else ()

    @property
    def is_created(self) -> bool:
        return self.event_name.startswith("ObjectCreated:")

    @property
    def is_removed(self) -> bool:
        return self.event_name.startswith("ObjectRemoved:")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what Celery carries; never pickle)."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "event_name": self.event_name,
            "event_time": self.event_time.isoformat() if self.event_time else None,
            "size": self.size,
            "etag": self.etag,
            "version_id": self.version_id,
            "sequencer": self.sequencer,
            "region": self.region,
            "source": self.source,
            "raw": self.raw,
            "batch": None
            if self.batch is None
            else {
                "schema_version": self.batch.schema_version,
                "invocation_id": self.batch.invocation_id,
                "task_id": self.batch.task_id,
                "job_id": self.batch.job_id,
                "user_arguments": self.batch.user_arguments,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> S3Event:
        """Inverse of `to_dict` (keys are already decoded there: no second decoding)."""
        when = data.get("event_time")
        batch = data.get("batch")
        return cls(
            bucket=data["bucket"],
            key=data["key"],
            event_name=data["event_name"],
            event_time=datetime.fromisoformat(when) if when else None,
            size=data.get("size"),
            etag=data.get("etag") or "",
            version_id=data.get("version_id") or "",
            sequencer=data.get("sequencer") or "",
            region=data.get("region") or "",
            source=data.get("source") or EventSource.UNKNOWN,
            raw=data.get("raw") or {},
            batch=BatchJobTask(**batch) if batch else None,
        )

    def open(self, mode: str = "rb") -> IO[Any]:
        """Open the object through django-storages (S3 storage on the configured endpoint)."""
        from s3tasks.storage import open_object

        return open_object(self.bucket, self.key, mode)
