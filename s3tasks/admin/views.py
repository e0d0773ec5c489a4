"""Admin pages that are not a model's change form: routing explanation and test events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from s3tasks.admin.explain import explain_routing
from s3tasks.admin.forms import HypotheticalEventForm, TestEventForm
from s3tasks.conf import get_settings
from s3tasks.events import EventSource, S3Event
from s3tasks.processing.dispatch import DispatchOutcome, dispatch_event

View = Callable[[HttpRequest], HttpResponse]

# A custom permission (`HandlerRun.Meta.permissions`): running handlers is not an edit of a
# row, so no add/change/delete permission implies it.
RUN_HANDLERS = "s3tasks.run_handlers"


def can_run_handlers(request: HttpRequest) -> bool:
    """Retrying and recovering runs and sending test events all execute handler code."""
    return request.user.has_perm(RUN_HANDLERS)


def _context(modeladmin: admin.ModelAdmin, request: HttpRequest, title: str) -> dict[str, Any]:
    return {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
    }


def which_handlers_view(modeladmin: admin.ModelAdmin) -> View:
    """Bucket + key + event name → the handlers routing would run, and every rule's verdict."""

    def view(request: HttpRequest) -> HttpResponse:
        if not modeladmin.has_view_permission(request):
            raise PermissionDenied
        form = HypotheticalEventForm(request.GET or None)
        explanation = None
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            explanation = explain_routing(data["bucket"], data["key"], data["event_name"])
        context = {
            **_context(modeladmin, request, _("Which handlers would run?")),
            "form": form,
            "explanation": explanation,
            "bucket_names": form.bucket_names,
            "can_send": can_run_handlers(request),
        }
        return TemplateResponse(
            request, "admin/s3tasks/notificationrule/which_handlers.html", context
        )

    return view


def build_test_event(
    bucket: str, key: str, event_name: str, size: int | None = None, user: str = ""
) -> S3Event:
    """An event as S3 would send it, marked as coming from the admin.

    A fresh etag per send makes each test event distinct (its own dedup key), so sending the
    same key twice runs the handlers twice, as a second real upload would.
    """

    now = timezone.now()
    etag = uuid.uuid4().hex
    return S3Event(
        bucket=bucket,
        key=key,
        event_name=event_name,
        event_time=now,
        size=size,
        etag=etag,
        region=get_settings().REGION,
        source=EventSource.ADMIN,
        raw={"eventSource": "s3tasks:admin", "sentBy": user, "eventTime": now.isoformat()},
    )


def report_test_event(request: HttpRequest, event: S3Event, outcome: DispatchOutcome) -> None:
    """One admin message in the level's colour: success, error (a handler failed) or warning
    (no handler ran). It starts with words, never a name: the admin capitalises messages."""
    where = {"event": event.event_name, "bucket": event.bucket, "key": event.key}
    count = len(outcome.runs)
    if not count:
        message = _("Test event s3:%(event)s on s3://%(bucket)s/%(key)s: no rule matched.")
        messages.warning(request, message % where)
        return
    failed = sum(1 for run in outcome.runs if not run.ok)
    if not failed:
        message = ngettext(
            "Test event s3:%(event)s on s3://%(bucket)s/%(key)s sent to %(count)d handler.",
            "Test event s3:%(event)s on s3://%(bucket)s/%(key)s sent to %(count)d handlers.",
            count,
        )
        messages.success(request, message % {**where, "count": count})
        return
    message = ngettext(
        "Test event s3:%(event)s on s3://%(bucket)s/%(key)s: %(failed)d of %(count)d handler "
        "failed.",
        "Test event s3:%(event)s on s3://%(bucket)s/%(key)s: %(failed)d of %(count)d handlers "
        "failed.",
        count,
    )
    messages.error(request, message % {**where, "count": count, "failed": failed})


def send_test_event_view(modeladmin: admin.ModelAdmin) -> View:
    """Dispatch a hand-made event through the normal path and show what happened."""

    def view(request: HttpRequest) -> HttpResponse:
        if not can_run_handlers(request):
            raise PermissionDenied
        form = TestEventForm(request.POST or None, initial=request.GET.dict() or None)
        outcome = event = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            event = build_test_event(
                data["bucket"], data["key"], data["event_name"], data["size"], str(request.user)
            )
            outcome = dispatch_event(event, mode=data["mode"] or None)
            report_test_event(request, event, outcome)
        context = {
            **_context(modeladmin, request, _("Send a test event")),
            "form": form,
            "event": event,
            "outcome": outcome,
            "bucket_names": form.bucket_names,
        }
        return TemplateResponse(request, "admin/s3tasks/eventrecord/send_test_event.html", context)

    return view
