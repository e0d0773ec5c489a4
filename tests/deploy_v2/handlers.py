"""Release 2's handlers (autodiscovered as `tests.deploy_v2.handlers`): release 1's, with the
archive rule moved to `archive/2/`, plus a handler for removals."""

from __future__ import annotations

from s3tasks import S3Event, on_s3_event
from tests.deploy_support import (
    ARCHIVE,
    BUCKET,
    QUEUE,
    RECORD_REMOVED,
    RECORD_UPLOAD,
    count_run,
)


@on_s3_event(BUCKET, prefix="uploads/", queue=QUEUE, name=RECORD_UPLOAD)
def record_upload(event: S3Event) -> str:
    count_run(RECORD_UPLOAD, event.key)
    return event.key


@on_s3_event(BUCKET, prefix="archive/2/", queue=QUEUE, name=ARCHIVE)
def archive(event: S3Event) -> str:
    count_run(ARCHIVE, event.key)
    return event.key


@on_s3_event(
    BUCKET, events=["s3:ObjectRemoved:*"], prefix="uploads/", queue=QUEUE, name=RECORD_REMOVED
)
def record_removed(event: S3Event) -> str:
    count_run(RECORD_REMOVED, event.key)
    return event.key
