"""What the two releases in tests/deploy_v1 and tests/deploy_v2 share: names, and counting
each handler's real executions (a side-effect row per run, in the run's transaction).

The test process imports only this module, never the releases' handler modules: those register
code bindings, and each release must be loaded alone, in its own `manage.py` subprocess
(`S3TASKS_EXTRA_APPS=tests.deploy_v1` or `tests.deploy_v2`).
"""

from __future__ import annotations

from django.db.models import F

from project.demo.models import ImportedFile

BUCKET = "rolling-deploy"
QUEUE = "rolling-deploy-events"
RECORD_UPLOAD = "tests.deploy.record_upload"  # both releases
ARCHIVE = "tests.deploy.archive"  # both releases; v2 changes its prefix
RECORD_REMOVED = "tests.deploy.record_removed"  # v2 only
_RUNS = "deploy-runs:"  # ImportedFile.bucket prefix of the counting rows


def count_run(handler_name: str, key: str) -> None:
    row, _ = ImportedFile.objects.get_or_create(bucket=_RUNS + handler_name[-40:], key=key)
    ImportedFile.objects.filter(pk=row.pk).update(rows=F("rows") + 1)


def runs_per_key(handler_name: str) -> dict[str, int]:
    """How many times `handler_name` really ran, per object key."""
    rows = ImportedFile.objects.filter(bucket=_RUNS + handler_name[-40:])
    return dict(rows.values_list("key", "rows"))
