"""Demo handlers: import CSV uploads under incoming/, forget them when they are removed."""

import csv
import io

from django.db import transaction

from project.demo.models import ImportedFile, ImportedRow
from s3tasks import S3Event, on_s3_event

DEMO_BUCKET = "s3tasks-demo-uploads"


@on_s3_event(DEMO_BUCKET, events=["s3:ObjectCreated:*"], prefix="incoming/", suffix=".csv")
def import_csv(event: S3Event) -> str:
    """Read the uploaded CSV and store its rows (replacing an earlier import of the key)."""
    with event.open("rb") as body:
        text = body.read().decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    with transaction.atomic():
        imported, _ = ImportedFile.objects.update_or_create(
            bucket=event.bucket, key=event.key, defaults={"rows": len(rows), "removed": False}
        )
        imported.row_set.all().delete()
        ImportedRow.objects.bulk_create(
            ImportedRow(file=imported, line=i, data=row) for i, row in enumerate(rows, start=1)
        )
    return f"imported {len(rows)} rows"


@on_s3_event(DEMO_BUCKET, events=["s3:ObjectRemoved:*"], prefix="incoming/", suffix=".csv")
def forget_csv(event: S3Event) -> str:
    """The upload was removed: drop its rows, keep a tombstone for the history."""
    updated = ImportedFile.objects.filter(bucket=event.bucket, key=event.key).update(
        rows=0, removed=True
    )
    ImportedRow.objects.filter(file__bucket=event.bucket, file__key=event.key).delete()
    return f"forgot {updated} file(s)"
