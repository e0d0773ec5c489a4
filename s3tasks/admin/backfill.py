"""Admin for backfills: the list with each one's live progress, a page that starts one (run by
a Celery task), and the "resume" and "cancel" actions.

A backfill's row is its record, written by whoever runs it (`manage.py s3tasks_backfill` or
the Celery task), so nobody adds or edits one here. Starting records the request as `queued`
and sends `s3tasks.run_backfill` (`s3tasks.ops.backfill_tasks`); when Celery cannot run it,
the page says so beforehand and the row waits for `manage.py s3tasks_backfill --resume ID`.
Cancelling sets the state to `cancelled`; the run sees it before its next chunk and stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from s3tasks.conf import get_settings
from s3tasks.exceptions import BackfillError
from s3tasks.models import Backfill, Bucket
from s3tasks.models.backfill import STALE_AFTER
from s3tasks.ops.backfill import check_request
from s3tasks.ops.backfill_objects import BackfillRequest
from s3tasks.ops.backfill_tasks import (
    celery_problem,
    celery_runs_eagerly,
    record_queued,
    send_backfill,
)
from s3tasks.rules.registry import registry

# Custom permissions (`Backfill.Meta.permissions`): starting a backfill runs handler code on
# a whole bucket and stopping one interrupts someone's work; the view permission implies
# neither.
CANCEL_BACKFILL = "s3tasks.cancel_backfill"
START_BACKFILL = "s3tasks.start_backfill"
CANCELLABLE = (
    Backfill.State.QUEUED,
    Backfill.State.RUNNING,
    Backfill.State.INTERRUPTED,
    Backfill.State.FAILED,
)
STOPPED = (Backfill.State.INTERRUPTED, Backfill.State.FAILED, Backfill.State.CANCELLED)
REFRESH_SECONDS = 5  # the list reloads this often while a backfill is queued or running
START_TEMPLATE = "admin/s3tasks/backfill/start.html"

View = Callable[[HttpRequest], HttpResponse]


class StartBackfillForm(forms.Form):
    """What `manage.py s3tasks_backfill` takes, minus what only a terminal needs."""

    bucket = forms.CharField(
        label=_("Bucket"),
        max_length=63,
        widget=forms.TextInput(attrs={"list": "s3tasks-buckets"}),
    )
    prefix = forms.CharField(
        label=_("Prefix"),
        max_length=1024,
        required=False,
        help_text=_("Only keys starting with this: nothing else is listed."),
    )
    suffix = forms.CharField(
        label=_("Suffix"),
        max_length=1024,
        required=False,
        help_text=_("Only keys ending with this."),
    )
    handlers = forms.MultipleChoiceField(
        label=_("Handlers"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_(
            "Run exactly these handlers on every listed object, whatever the rules say. None "
            "ticked: the handlers the bucket's enabled rules route object creations to."
        ),
    )
    modified_since = forms.DateTimeField(
        label=_("Modified since"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    modified_until = forms.DateTimeField(
        label=_("Modified until"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    mode = forms.ChoiceField(
        label=_("Dispatch"),
        choices=Backfill.Mode.choices,
        help_text=_(
            "Run inline: the Celery worker running the backfill runs the handlers itself. Send "
            "to Celery: each run is a Celery task of its own. Enqueue: each object goes to its "
            "rule's SQS queue for the sqs_worker processes."
        ),
    )
    queue = forms.CharField(
        label=_("Queue"),
        max_length=80,
        required=False,
        help_text=_("Enqueue only: send every event to this SQS queue (name or URL)."),
    )
    rate = forms.FloatField(
        label=_("Rate"),
        required=False,
        help_text=_("At most this many objects per second (empty: as fast as it goes)."),
    )
    count = forms.BooleanField(
        label=_("Count the objects first"),
        required=False,
        help_text=_(
            "List the keys once before starting, so the list shows a share and the time left."
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["handlers"].choices = [(n, n) for n in sorted(h.name for h in registry)]
        self.fields["mode"].initial = get_settings().DISPATCH
        zone = timezone.get_current_timezone_name()
        for name, text in (
            ("modified_since", _("Only objects last modified at or after this (%(zone)s).")),
            ("modified_until", _("Only objects last modified before this (%(zone)s).")),
        ):
            self.fields[name].help_text = text % {"zone": zone}
        self.bucket_names = list(Bucket.objects.values_list("name", flat=True))

    def clean_rate(self) -> float | None:
        rate = self.cleaned_data["rate"]
        if rate is not None and rate <= 0:
            raise ValidationError(_("The rate must be more than 0 objects per second."))
        return rate

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("modified_since"), data.get("modified_until")
        if since and until and since >= until:
            self.add_error("modified_until", _("Must be later than “modified since”."))
        if data.get("queue") and data.get("mode") != Backfill.Mode.ENQUEUE:
            self.add_error("queue", _("A queue goes with “Enqueue”."))
        if not self.errors:
            try:
                check_request(self.backfill_request())
            except BackfillError as exc:
                raise ValidationError(str(exc)) from exc
        return data

    def backfill_request(self) -> BackfillRequest:
        data = self.cleaned_data
        return BackfillRequest(
            bucket=data["bucket"],
            prefix=data["prefix"],
            suffix=data["suffix"],
            handlers=tuple(data["handlers"]),
            modified_since=data["modified_since"],
            modified_until=data["modified_until"],
            mode=data["mode"],
            queue=data["queue"],
            rate=data["rate"],
            region=get_settings().REGION,
        )


def resume_command(row: Backfill, count: bool = False) -> str:
    return f"manage.py s3tasks_backfill --resume {row.pk}" + (" --count" if count else "")


def start_backfill_view(modeladmin: BackfillAdmin) -> View:
    """The form; on submit, the backfill recorded as queued and sent to Celery."""

    def view(request: HttpRequest) -> HttpResponse:
        if not modeladmin.has_start_permission(request):
            raise PermissionDenied
        problem = celery_problem()
        form = StartBackfillForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            row = record_queued(form.backfill_request(), requested_by=request.user.get_username())
            count = form.cleaned_data["count"]
            error = problem or send_backfill(row, count=count)
            report_start(request, row, error, count)
            return HttpResponseRedirect(reverse("admin:s3tasks_backfill_changelist"))
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": gettext("Start a backfill"),
            "opts": Backfill._meta,
            "form": form,
            "bucket_names": form.bucket_names,
            "celery_problem": problem,
            "celery_eager": not problem and celery_runs_eagerly(),
        }
        return TemplateResponse(request, START_TEMPLATE, context)

    # The row must be committed before the task is sent (a worker reads it at once), and a
    # failed send must be reported in this response: no request-wide transaction here.
    return transaction.non_atomic_requests(view)


def report_start(request: HttpRequest, row: Backfill, error: str, count: bool) -> None:
    where = {"id": row.pk, "bucket": row.bucket, "prefix": row.prefix}
    if error:
        message = gettext(
            "Backfill %(id)d of s3://%(bucket)s/%(prefix)s is recorded but Celery cannot run "
            "it: %(error)s. Run it with `%(command)s`."
        )
        messages.warning(
            request, message % {**where, "error": error, "command": resume_command(row, count)}
        )
        return
    row.refresh_from_db(fields=["state"])
    if row.state == Backfill.State.QUEUED:
        message = gettext(
            "Backfill %(id)d of s3://%(bucket)s/%(prefix)s sent to Celery; its progress shows "
            "below."
        )
    else:  # an eager Celery ran it in this request
        message = gettext("Backfill %(id)d of s3://%(bucket)s/%(prefix)s ran: %(state)s.")
    messages.success(request, message % {**where, "state": row.get_state_display().lower()})


@admin.register(Backfill)
class BackfillAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "bucket",
        "prefix",
        "status",
        "mode",
        "progress",
        "matched",
        "dispatched",
        "skipped",
        "failed",
        "updated_at",
    )
    list_filter = ("state", "mode", "bucket")
    search_fields = ("bucket", "prefix", "resume_after")
    date_hierarchy = "created_at"
    actions = ["resume", "cancel"]
    fields = (
        ("bucket", "prefix", "suffix"),
        "handlers",
        ("modified_since", "modified_until"),
        ("mode", "queue", "rate"),
        ("state", "requested_by"),
        "progress",
        ("pages", "listed", "matched", "expected"),
        ("dispatched", "skipped", "failed"),
        "per_handler",
        "resume_after",
        "errors",
        ("created_at", "updated_at", "finished_at"),
    )
    readonly_fields = tuple(
        name for entry in fields for name in (entry if isinstance(entry, tuple) else (entry,))
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CANCEL_BACKFILL)

    def has_start_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(START_BACKFILL)

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(start_backfill_view(self))
        start = path("start/", view, name="s3tasks_backfill_start")
        return [start, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        active = Backfill.objects.filter(state=Backfill.State.QUEUED) | Backfill.objects.filter(
            state=Backfill.State.RUNNING, updated_at__gte=timezone.now() - STALE_AFTER
        )
        extra = {
            **(extra_context or {}),
            "can_start_backfill": self.has_start_permission(request),
            "refresh_seconds": REFRESH_SECONDS if active.exists() else None,
        }
        return super().changelist_view(request, extra)

    @admin.display(description=_("state"), ordering="state")
    def status(self, backfill: Backfill) -> str:
        """The state; a running one that has gone silent says it is taken for dead."""
        if backfill.is_stale:
            since = timezone.localtime(backfill.updated_at).strftime("%Y-%m-%d %H:%M")
            note = gettext("no progress since %(when)s: resume it") % {"when": since}
            return format_html("{}<br><small>{}</small>", backfill.get_state_display(), note)
        return backfill.get_state_display()

    @admin.display(description=_("progress"))
    def progress(self, backfill: Backfill) -> str:
        """Objects listed (of how many, when counted), the pace so far and the time left."""
        listed = f"{backfill.listed:,}"
        if backfill.expected:
            share = min(100.0, 100.0 * backfill.listed / backfill.expected)
            listed = f"{listed} / {backfill.expected:,} ({share:.0f} %)"
        speed = backfill.objects_per_second
        pace = gettext("%(speed)s objects/s") % {"speed": f"{speed:,.0f}"} if speed else ""
        left = time_left(backfill)
        if left:
            pace = gettext("%(pace)s, about %(left)s left") % {"pace": pace, "left": left}
        return format_html("{}<br><small>{}</small>", listed, pace)

    @admin.action(
        description=_("Resume the selected backfills (run by Celery)"), permissions=["start"]
    )
    def resume(self, request: HttpRequest, queryset: QuerySet[Backfill]) -> None:
        """Send stopped, dead or still-queued backfills to Celery again; each goes on from its
        last committed chunk. Completed and live ones are left alone."""
        rows = [row for row in queryset if resumable(row)]
        problem = celery_problem()
        if problem:
            message = gettext(
                "Celery cannot run backfills here: %(problem)s. Resume each with "
                "`manage.py s3tasks_backfill --resume ID`."
            )
            self.message_user(request, message % {"problem": problem}, messages.ERROR)
            return
        sent, errors = 0, []
        for row in rows:
            error = send_backfill(row, resume=row.state != Backfill.State.QUEUED)
            sent += not error
            errors += [error] if error else []
        message = ngettext(
            "Sent %(count)d backfill to Celery; it goes on from its last chunk.",
            "Sent %(count)d backfills to Celery; they go on from their last chunk.",
            sent,
        ) % {"count": sent}
        left_alone = len(queryset) - len(rows)
        if left_alone:
            message += " " + ngettext(
                "%(count)d completed or running backfill left alone.",
                "%(count)d completed or running backfills left alone.",
                left_alone,
            ) % {"count": left_alone}
        if errors:
            message += " " + gettext("Not sent: %(error)s") % {"error": errors[0]}
        level = messages.SUCCESS if sent and not errors else messages.WARNING
        self.message_user(request, message, level)

    @admin.action(description=_("Cancel the selected backfills"), permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Backfill]) -> None:
        count = queryset.filter(state__in=CANCELLABLE).update(state=Backfill.State.CANCELLED)
        self.message_user(
            request,
            ngettext(
                "Cancelled %(count)d backfill; a running one stops before its next chunk.",
                "Cancelled %(count)d backfills; running ones stop before their next chunk.",
                count,
            )
            % {"count": count},
            messages.SUCCESS if count else messages.WARNING,
        )


def resumable(row: Backfill) -> bool:
    """Stopped (interrupted, failed, cancelled), dead (running but silent) or still queued."""
    return row.state in STOPPED or row.is_stale or row.state == Backfill.State.QUEUED


def time_left(backfill: Backfill) -> str:
    """`3 min`, for a running backfill whose total is known; "" otherwise."""
    speed = backfill.objects_per_second
    if backfill.state != Backfill.State.RUNNING or not backfill.expected or not speed:
        return ""
    seconds = max(0.0, (backfill.expected - backfill.listed) / speed)
    if seconds < 90:
        return gettext("%(n)d s") % {"n": round(seconds)}
    if seconds < 90 * 60:
        return gettext("%(n)d min") % {"n": round(seconds / 60)}
    return gettext("%(n).1f h") % {"n": seconds / 3600}
