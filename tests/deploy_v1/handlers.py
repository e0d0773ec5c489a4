"""Release 1's handlers (autodiscovered as `tests.deploy_v1.handlers`)."""

from __future__ import annotations

from s3tasks import S3Event, on_s3_event
from tests.deploy_support import ARCHIVE, BUCKET, QUEUE, RECORD_UPLOAD, count_run


@on_s3_event(BUCKET, prefix="uploads/", queue=QUEUE, name=RECORD_UPLOAD)
def record_upload(event: S3Event) -> str:
    count_run(RECORD_UPLOAD, event.key)
    return event.key


@on_s3_event(BUCKET, prefix="archive/", queue=QUEUE, name=ARCHIVE)
def archive(event: S3Event) -> str:
    count_run(ARCHIVE, event.key)
    return event.key
