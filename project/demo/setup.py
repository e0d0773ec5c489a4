"""The demo's AWS configuration beyond what `@on_s3_event` declares: CORS on the upload
bucket (for the browser upload page) and the reports bucket the follow-ups write to."""

from __future__ import annotations

from collections.abc import Sequence

from project.demo.handlers import DEMO_BUCKET
from project.demo.tasks import REPORTS_BUCKET
from s3tasks.models import Bucket

DEFAULT_ORIGINS = ("http://127.0.0.1:8000", "http://localhost:8000")


def cors_rules(origins: Sequence[str]) -> list[dict]:
    """What a browser needs to POST a presigned form to the bucket and read the reply."""
    return [
        {
            "AllowedMethods": ["POST", "PUT", "GET"],
            "AllowedOrigins": list(origins),
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag", "Location"],
            "MaxAgeSeconds": 300,
        }
    ]


def configure_demo_buckets(origins: Sequence[str] = DEFAULT_ORIGINS) -> list[Bucket]:
    """Create/update the demo's Bucket rows (idempotent; sync then applies them)."""
    uploads, _ = Bucket.objects.update_or_create(
        name=DEMO_BUCKET, defaults={"cors_rules": cors_rules(origins), "create_if_missing": True}
    )
    # Written by the follow-up tasks, never listened to: no notifications to manage.
    reports, _ = Bucket.objects.update_or_create(
        name=REPORTS_BUCKET, defaults={"manage_notifications": False, "create_if_missing": True}
    )
    return [uploads, reports]
