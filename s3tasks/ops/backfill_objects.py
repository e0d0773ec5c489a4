"""What a backfill lists and what it makes of each object: the request, ListObjectsV2 pages,
the filters, and the synthetic `S3Event` (with the S3-shaped record it carries).

Pure except `list_pages`/`count_objects`, which take an S3 client. One object becomes one
event, `ObjectCreated:Put` with source `backfill`, whose raw record is exactly the body that
`--enqueue` sends: parsing that body gives an equal event with the same dedup key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from s3tasks.events import BACKFILL_RECORD_KEY, EventSource, S3Event

# S3 does not say how an object already in a bucket was created; routing matches a backfill
# event against a rule for any kind of creation (`s3tasks.rules.routing.CREATED_EVENT_NAMES`).
BACKFILL_EVENT_NAME = "ObjectCreated:Put"
CONFIGURATION_ID = "s3tasks-backfill"  # the record's `s3.configurationId`
PAGE_SIZE = 1000  # ListObjectsV2's largest page

S3Object = Mapping[str, Any]  # one `Contents` entry of a ListObjectsV2 page


@dataclass(frozen=True)
class BackfillRequest:
    """What to backfill: which objects, which handlers, and how to dispatch them."""

    bucket: str
    prefix: str = ""
    suffix: str = ""
    handlers: tuple[str, ...] = ()  # empty: the handlers the enabled rules route to
    modified_since: datetime | None = None  # LastModified >= this
    modified_until: datetime | None = None  # LastModified < this
    mode: str = "inline"  # inline, celery or enqueue (`Backfill.Mode`)
    queue: str = ""  # enqueue: this queue for every event instead of its rule's
    rate: float | None = None  # at most this many objects per second
    region: str = field(default="", compare=False)

    def wants(self, obj: S3Object) -> bool:
        """Whether a listed object passes the suffix and LastModified filters (the prefix
        is the listing's own)."""
        if not obj["Key"].endswith(self.suffix):
            return False
        modified = obj.get("LastModified")
        if modified is None:
            return self.modified_since is None and self.modified_until is None
        if self.modified_since is not None and modified < self.modified_since:
            return False
        return self.modified_until is None or modified < self.modified_until


def list_pages(
    s3: Any, bucket: str, prefix: str = "", start_after: str = "", page_size: int = PAGE_SIZE
) -> Iterator[list[S3Object]]:
    """The objects under `prefix`, after key `start_after`, one ListObjectsV2 page at a time
    (key order): the next page is asked for only when the caller wants it."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "MaxKeys": page_size}
    if prefix:
        kwargs["Prefix"] = prefix
    if start_after:
        kwargs["StartAfter"] = start_after
    while True:
        page = s3.list_objects_v2(**kwargs)
        yield page.get("Contents", [])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token


def count_objects(s3: Any, request: BackfillRequest, page_size: int = PAGE_SIZE) -> int:
    """How many objects the listing will give (one pass over the keys, for an ETA)."""
    return sum(len(page) for page in list_pages(s3, request.bucket, request.prefix, "", page_size))


def aws_time(when: datetime) -> str:
    """`2024-05-01T09:15:27.604Z`, as S3 writes `eventTime`."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{when.microsecond // 1000:03d}Z"


def backfill_record(
    bucket: str,
    obj: S3Object,
    *,
    region: str,
    backfill_id: int | None,
    handlers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The S3 notification record S3 would have sent for `obj`'s creation, marked as a
    backfill (its `s3tasks` object); the key URL-encoded as S3 encodes it."""
    modified = obj.get("LastModified") or datetime.now(UTC)
    s3_object: dict[str, Any] = {"key": quote_plus(obj["Key"], safe="/")}
    if obj.get("Size") is not None:
        s3_object["size"] = obj["Size"]
    etag = str(obj.get("ETag") or "").strip('"')
    if etag:
        s3_object["eTag"] = etag
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": aws_time(modified),
        "eventName": BACKFILL_EVENT_NAME,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": CONFIGURATION_ID,
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": s3_object,
        },
        BACKFILL_RECORD_KEY: {"backfill": backfill_id, "handlers": list(handlers)},
    }


def backfill_event(
    bucket: str,
    obj: S3Object,
    *,
    region: str,
    backfill_id: int | None,
    handlers: tuple[str, ...] = (),
) -> S3Event:
    """The event of one listed object (equal to what parsing its record would give)."""
    record = backfill_record(bucket, obj, region=region, backfill_id=backfill_id, handlers=handlers)
    s3_object = record["s3"]["object"]
    return S3Event(
        bucket=bucket,
        key=obj["Key"],
        event_name=BACKFILL_EVENT_NAME,
        event_time=datetime.fromisoformat(record["eventTime"]),
        size=s3_object.get("size"),
        etag=s3_object.get("eTag", ""),
        region=region,
        source=EventSource.BACKFILL,
        raw=record,
    )
