"""Demo handlers: import CSV uploads under incoming/, forget them when they are removed.

Each handler enqueues a follow-up command (a Celery task, sent after the import commits) that
writes to a DIFFERENT bucket, `s3tasks-demo-reports`, declared with `writes_to=` so the
loop check knows the handlers cannot trigger themselves.
"""

import csv
import io

from django.db import transaction

from project.demo.models import ImportedFile, ImportedRow
from project.demo.tasks import (
    REPORTS_BUCKET,
    REPORTS_PREFIX,
    delete_import_summary,
    write_import_summary,
)
from s3tasks import S3Event, enqueue, on_s3_event

DEMO_BUCKET = "s3tasks-demo-uploads"
REPORTS = f"{REPORTS_BUCKET}/{REPORTS_PREFIX}"


@on_s3_event(
    DEMO_BUCKET,
    events=["s3:ObjectCreated:*"],
    prefix="incoming/",
    suffix=".csv",
    writes_to=[REPORTS],
)
def import_csv(event: S3Event) -> str:
    """Read the uploaded CSV and store its rows (replacing an earlier import of the key)."""
    with event.open("rb") as body:
        text = body.read().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    with transaction.atomic():
        imported, _ = ImportedFile.objects.update_or_create(
            bucket=event.bucket, key=event.key, defaults={"rows": len(rows), "removed": False}
        )
        imported.row_set.all().delete()
        ImportedRow.objects.bulk_create(
            ImportedRow(file=imported, line=i, data=row) for i, row in enumerate(rows, start=1)
        )
        enqueue(write_import_summary, event.bucket, event.key)
    return f"imported {len(rows)} rows"


@on_s3_event(
    DEMO_BUCKET,
    events=["s3:ObjectRemoved:*"],
    prefix="incoming/",
    suffix=".csv",
    writes_to=[REPORTS],
)
def forget_csv(event: S3Event) -> str:
    """The upload was removed: drop its rows and its report, keep a tombstone for history."""
    with transaction.atomic():
        updated = ImportedFile.objects.filter(bucket=event.bucket, key=event.key).update(
            rows=0, removed=True, summary_key=""
        )
        ImportedRow.objects.filter(file__bucket=event.bucket, file__key=event.key).delete()
        enqueue(delete_import_summary, event.key)
    return f"forgot {updated} file(s)"
