"""The chaos tests' handler: a side effect that a second run would duplicate, plus a follow-up.

Each run inserts one `ImportedRow` (no unique constraint: running twice leaves two rows) under
the `ImportedFile` that `manage.py chaos setup` created, and publishes `{"key": ...}` to the
SQS queue named by `CHAOS_FOLLOWUP_QUEUE`, all in the run's transaction. `CHAOS_HANDLER_MS`
adds a pause, so a kill can land mid-batch.
"""

from __future__ import annotations

import os
import time

from project.demo.models import ImportedFile, ImportedRow
from s3tasks import S3Event, publish_sqs
from s3tasks.rules.registry import s3_handler

SIDE_EFFECT = "tests.chaos.side_effect"
SIDE_EFFECTS_BUCKET = "chaos-side-effects"
SIDE_EFFECTS_KEY = "rows"
DEFAULT_FOLLOWUP_QUEUE = "chaos-followups"

_file_id: list[int] = []  # the parent row's id, looked up once per process


def side_effects_file() -> ImportedFile:
    """The row every side effect hangs off (created by `manage.py chaos setup`)."""
    row, _ = ImportedFile.objects.get_or_create(bucket=SIDE_EFFECTS_BUCKET, key=SIDE_EFFECTS_KEY)
    return row


@s3_handler(name=SIDE_EFFECT)
def side_effect(event: S3Event) -> None:
    if not _file_id:
        _file_id.append(side_effects_file().pk)
    ImportedRow.objects.create(
        file_id=_file_id[0], line=os.getpid(), data={"key": event.key, "bucket": event.bucket}
    )
    pause = float(os.environ.get("CHAOS_HANDLER_MS", "0")) / 1000
    if pause:
        time.sleep(pause)
    queue = os.environ.get("CHAOS_FOLLOWUP_QUEUE", DEFAULT_FOLLOWUP_QUEUE)
    publish_sqs(queue, {"key": event.key, "bucket": event.bucket})
