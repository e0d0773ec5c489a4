"""Follow-up commands of the demo handlers: write (or remove) a summary report in ANOTHER
bucket, so the handlers never trigger themselves (S3 event loops are easy to build)."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from celery import shared_task
from django.utils import timezone

from project.demo.models import ImportedFile

REPORTS_BUCKET = "s3tasks-demo-reports"
REPORTS_PREFIX = "summaries/"


def report_key(source_key: str) -> str:
    """`incoming/orders.csv` → `summaries/orders.csv.json`."""
    return REPORTS_PREFIX + source_key.removeprefix("incoming/") + ".json"


def numeric_totals(rows: list[dict]) -> dict[str, str]:
    """Sum every column whose values are all numbers (as strings: exact decimals in JSON)."""
    totals: dict[str, Decimal] = {}
    skip: set[str] = set()
    for row in rows:
        for column, value in row.items():
            if column in skip:
                continue
            try:
                totals[column] = totals.get(column, Decimal(0)) + Decimal(str(value))
            except (InvalidOperation, TypeError):
                skip.add(column)
                totals.pop(column, None)
    return {column: str(total) for column, total in totals.items()}


def build_summary(imported: ImportedFile) -> dict:
    rows = [r.data for r in imported.row_set.order_by("line")]
    columns = list(rows[0]) if rows else []
    return {
        "source": f"s3://{imported.bucket}/{imported.key}",
        "rows": len(rows),
        "columns": columns,
        "totals": numeric_totals(rows),
        "generated_at": timezone.now().isoformat(),
    }


@shared_task(name="project.demo.tasks.write_import_summary", serializer="json")
def write_import_summary(bucket: str, key: str) -> str:
    """Write `summaries/<file>.json` to the reports bucket for an imported CSV."""
    from s3tasks.aws import client

    imported = ImportedFile.objects.filter(bucket=bucket, key=key, removed=False).first()
    if imported is None:
        return "nothing to summarise (file removed meanwhile)"
    target = report_key(key)
    body = json.dumps(build_summary(imported), indent=2).encode()
    client("s3").put_object(
        Bucket=REPORTS_BUCKET, Key=target, Body=body, ContentType="application/json"
    )
    ImportedFile.objects.filter(pk=imported.pk).update(summary_key=target)
    return f"s3://{REPORTS_BUCKET}/{target}"


@shared_task(name="project.demo.tasks.delete_import_summary", serializer="json")
def delete_import_summary(key: str) -> str:
    """The CSV was removed: remove its report too (deleting a missing key is not an error)."""
    from s3tasks.aws import client

    target = report_key(key)
    client("s3").delete_object(Bucket=REPORTS_BUCKET, Key=target)
    return f"deleted s3://{REPORTS_BUCKET}/{target}"
