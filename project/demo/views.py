"""The demo upload page: the browser POSTs straight to the (emulated) bucket with a presigned
form, then polls a small JSON endpoint to watch the handler runs of its key.

Every view needs a staff login (the admin's login page) and a permission, as the admin would:
`demo.upload_csv` to upload, `s3tasks.view_handlerrun` (or change) to see runs and errors.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.models import AnonymousUser, PermissionsMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from project.demo.handlers import DEMO_BUCKET
from project.demo.models import ImportedFile
from s3tasks.models import HandlerRun
from s3tasks.text import duration_text

UPLOAD_PREFIX = "incoming/"
UPLOAD_SUFFIX = ".csv"
UPLOAD_CONTENT_TYPE = "text/csv"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_NAME_CHARS = 200
PRESIGN_SECONDS = 300
# Letters, digits and a few punctuation marks survive; anything else (control characters,
# quotes, slashes, `$`, `%`, `+`) becomes "_" so a key never needs explaining.
UNSAFE_NAME_CHARS = re.compile(r"[^\w .()\-]")

User = PermissionsMixin | AnonymousUser
View = Callable[..., HttpResponse]


def can_upload(user: User) -> bool:
    return user.has_perm("demo.upload_csv")


def can_see_runs(user: User) -> bool:
    """The admin's rule for the handler-run pages: view, or change (which implies view)."""
    return user.has_perm("s3tasks.view_handlerrun") or user.has_perm("s3tasks.change_handlerrun")


def demo_view(allowed: Callable[[User], bool]) -> Callable[[View], View]:
    """A staff login (else the admin login page), then `allowed(user)` (else 403)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not allowed(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return staff_member_required(checked)

    return decorate


def upload_key(filename: str) -> str:
    """The exact key for a browser-supplied file name: `incoming/<safe name>.csv`.

    Only the base name is kept (no directories smuggled in), unusual characters become "_",
    and anything not ending in .csv is refused: the key is fixed here, server-side, and the
    presigned policy allows that key and no other.
    """
    name = posixpath.basename(filename.replace("\\", "/")).strip()
    if not name or name in {".", ".."}:
        raise ValueError("Choose a file with a name.")
    name = UNSAFE_NAME_CHARS.sub("_", unicodedata.normalize("NFC", name))
    stem, dot, extension = name.rpartition(".")
    if not dot or extension.lower() != UPLOAD_SUFFIX[1:]:
        raise ValueError(f"Only {UPLOAD_SUFFIX} files can be uploaded here.")
    stem = stem.strip(" .")
    if not stem:
        raise ValueError("Choose a file with a name.")
    return UPLOAD_PREFIX + stem[:MAX_NAME_CHARS] + UPLOAD_SUFFIX


def presigned_upload(s3: Any, key: str) -> dict[str, Any]:
    """A presigned POST that S3 accepts only for this key, as text/csv, of 1 B to 5 MB."""
    return s3.generate_presigned_post(
        Bucket=DEMO_BUCKET,
        Key=key,  # an exact {"key": key} condition (boto3 adds it; no "starts-with")
        Fields={"Content-Type": UPLOAD_CONTENT_TYPE},
        Conditions=[
            {"Content-Type": UPLOAD_CONTENT_TYPE},
            ["content-length-range", 1, MAX_UPLOAD_BYTES],
        ],
        ExpiresIn=PRESIGN_SECONDS,
    )


@require_GET
@demo_view(can_upload)
def upload_page(request: HttpRequest) -> HttpResponse:
    context = {
        "bucket": DEMO_BUCKET,
        "prefix": UPLOAD_PREFIX,
        "can_see_runs": can_see_runs(request.user),
    }
    return render(request, "demo/upload.html", context)


@require_POST
@demo_view(can_upload)
def presign(request: HttpRequest) -> JsonResponse:
    """POST (CSRF-protected: it hands out a write credential) → a form for exactly one key."""
    from s3tasks.aws import client

    try:
        key = upload_key(request.POST.get("filename", ""))
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    post = presigned_upload(client("s3"), key)
    return JsonResponse({"url": post["url"], "fields": post["fields"], "key": key})


@require_GET
@demo_view(can_see_runs)
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
                "event_id": run.event_id,
                "handler": run.handler_name.rsplit(".", 1)[-1],
                "event": run.event.event_name,
                "key": run.event.key,
                "state": run.state,
                "attempts": run.attempts,
                "duration_ms": run.duration_ms,
                "duration": duration_text(run.duration_ms),
                "result": run.result_summary,
                "error": run.error,
                "rows": imported.rows if imported else None,
                "summary": imported.summary_key if imported else "",
            }
        )
    return JsonResponse({"runs": data})
