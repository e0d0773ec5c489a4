"""The demo upload page: the browser POSTs straight to the (emulated) bucket with a presigned
form, then polls a small JSON endpoint to watch the handler runs of its key."""

from __future__ import annotations

import posixpath

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from project.demo.handlers import DEMO_BUCKET
from project.demo.models import ImportedFile
from s3tasks.models import HandlerRun

UPLOAD_PREFIX = "incoming/"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
PRESIGN_SECONDS = 300


def upload_key(filename: str) -> str:
    """A key under incoming/ from a browser-supplied name (no directories smuggled in)."""
    name = posixpath.basename(filename.replace("\\", "/")).strip()
    if not name or name in {".", ".."}:
        raise ValueError("Choose a file with a name.")
    return UPLOAD_PREFIX + name


@staff_member_required
@require_GET
def upload_page(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/upload.html", {"bucket": DEMO_BUCKET, "prefix": UPLOAD_PREFIX})


@staff_member_required
@require_GET
def presign(request: HttpRequest) -> JsonResponse:
    """A presigned POST for exactly one key under incoming/, limited in size and lifetime."""
    from s3tasks.aws import client

    try:
        key = upload_key(request.GET.get("filename", ""))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    post = client("s3").generate_presigned_post(
        Bucket=DEMO_BUCKET,
        Key=key,
        Conditions=[["content-length-range", 1, MAX_UPLOAD_BYTES]],
        ExpiresIn=PRESIGN_SECONDS,
    )
    return JsonResponse({"url": post["url"], "fields": post["fields"], "key": key})


@staff_member_required
@require_GET
def recent_runs(request: HttpRequest) -> JsonResponse:
    """The latest handler runs on the demo bucket (optionally of one key), newest first."""
    runs = HandlerRun.objects.filter(event__bucket=DEMO_BUCKET).select_related("event")
    key = request.GET.get("key")
    if key:
        runs = runs.filter(event__key=key)
    files = {f.key: f for f in ImportedFile.objects.filter(bucket=DEMO_BUCKET)}
    data = []
    for run in runs.order_by("-created_at", "-pk")[:20]:
        imported = files.get(run.event.key)
        data.append(
            {
                "id": run.pk,
                "handler": run.handler_name.rsplit(".", 1)[-1],
                "event": run.event.event_name,
                "key": run.event.key,
                "state": run.state,
                "attempts": run.attempts,
                "duration_ms": run.duration_ms,
                "result": run.result_summary,
                "error": run.error,
                "rows": imported.rows if imported else None,
                "summary": imported.summary_key if imported else "",
            }
        )
    return JsonResponse({"runs": data})
