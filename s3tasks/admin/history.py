"""Admin for what happened: events, handler runs, follow-up commands, malformed messages.
View-only by design: history is evidence, so nobody edits or adds it; the only writes are
retries and recoveries."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _

from s3tasks.admin.cells import (
    clipped,
    compact_time,
    duration_cell,
    first_line,
    pre,
    pretty_json,
    state_badge,
)
from s3tasks.admin.replay import replay_selected_runs
from s3tasks.admin.rule_runs import RuleFilter
from s3tasks.admin.views import can_run_handlers, send_test_event_view
from s3tasks.models import EventRecord, HandlerRun, MessageFailure, OutboxMessage, RunState
from s3tasks.ops.recovery import RecoveryReport, drive_runs
from s3tasks.processing.dispatch import retry_run


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by anyone with the view permission; never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class HandlerRunInline(admin.TabularInline):
    model = HandlerRun
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("handler_name", "state_badge", "attempts", "duration", "finished_at", "error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("state"))
    def state_badge(self, run: HandlerRun) -> str:
        return state_badge(run)

    @admin.display(description=_("duration"))
    def duration(self, run: HandlerRun) -> str:
        return duration_cell(run)


@admin.register(EventRecord)
class EventRecordAdmin(ReadOnlyAdmin):
    list_display = ("event_name", "bucket", "key", "source", "size", "received_at", "run_states")
    list_filter = ("source", "received_at", "event_name", "bucket")
    search_fields = ("bucket", "key", "message_id", "dedup_key")
    date_hierarchy = "received_at"
    inlines = [HandlerRunInline]
    change_list_template = "admin/s3tasks/eventrecord/change_list.html"
    fieldsets = (
        (None, {"fields": ("event_name", "bucket", "key", "source", "size", "etag")}),
        (_("Identity"), {"fields": ("dedup_key", "version_id", "sequencer", "region")}),
        (_("Delivery"), {"fields": ("event_time", "received_at", "message_id", "queue_name")}),
        (_("Payload"), {"fields": ("pretty_payload",)}),
    )
    readonly_fields = (
        "event_name",
        "bucket",
        "key",
        "source",
        "size",
        "etag",
        "dedup_key",
        "version_id",
        "sequencer",
        "region",
        "event_time",
        "received_at",
        "message_id",
        "queue_name",
        "pretty_payload",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("runs")

    @admin.display(description=_("runs"))
    def run_states(self, record: EventRecord) -> str:
        runs = list(record.runs.all())
        if not runs:
            return gettext("no handler")
        return format_html(
            " ".join(["{}"] * len(runs)),
            *(
                format_html("{}: {}", r.handler_name.rsplit(".", 1)[-1], state_badge(r))
                for r in runs
            ),
        )

    @admin.display(description=_("payload (normalized event and raw record)"))
    def pretty_payload(self, record: EventRecord) -> str:
        return pretty_json(record.payload)

    def get_urls(self) -> list:
        custom = [
            path(
                "send-test-event/",
                self.admin_site.admin_view(send_test_event_view(self)),
                name="s3tasks_send_test_event",
            )
        ]
        return custom + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        extra = {**(extra_context or {}), "can_send_test_event": can_run_handlers(request)}
        return super().changelist_view(request, extra)


# What the recover action did, by verdict of `drive_runs`; `count` picks the plural form.
RECOVERY_VERDICTS = (
    (
        "resent",
        ngettext_lazy(
            "%(count)d stuck run re-sent to Celery",
            "%(count)d stuck runs re-sent to Celery",
            "count",
        ),
    ),
    (
        "ran",
        ngettext_lazy("%(count)d stuck run ran again", "%(count)d stuck runs ran again", "count"),
    ),
    (
        "left_alone",
        ngettext_lazy(
            "%(count)d not stuck (finished or in time), left alone",
            "%(count)d not stuck (finished or in time), left alone",
            "count",
        ),
    ),
    (
        "no_handler",
        ngettext_lazy(
            "%(count)d needs a handler this server lacks",
            "%(count)d need a handler this server lacks",
            "count",
        ),
    ),
)


def recovery_summary(report: RecoveryReport) -> str:
    """One sentence saying what the recover action did with the selected runs."""
    parts = [
        template % {"count": report.count(verdict)}
        for verdict, template in RECOVERY_VERDICTS
        if report.count(verdict)
    ]
    return "; ".join(parts) + "." if parts else gettext("Nothing to recover.")


@admin.register(HandlerRun)
class HandlerRunAdmin(ReadOnlyAdmin):
    list_display = (
        "handler",
        "event_and_error",
        "state_and_attempts",
        "duration",
        "created",
    )
    list_filter = ("state", RuleFilter, "handler_name", "created_at")
    # Column widths and wrapping, so the list reads at 1,400 px beside both sidebars.
    change_list_template = "admin/s3tasks/handlerrun/change_list.html"
    search_fields = ("handler_name", "event__bucket", "event__key", "celery_task_id")
    date_hierarchy = "created_at"
    list_select_related = ("event",)
    actions = ["retry_failed_runs", "recover_stuck_runs", replay_selected_runs]
    fieldsets = (
        (None, {"fields": ("handler_name", "event_link", "state_badge", "result_summary")}),
        (
            _("Timing"),
            {"fields": ("attempts", "created_at", "started_at", "finished_at", "duration")},
        ),
        (_("Celery"), {"fields": ("celery_task_id", "celery_queue", "lease_expires_at")}),
        (
            _("Replays"),
            {"fields": ("replays", "replayed_at", "replayed_by", "previous_outcome")},
        ),
        (_("Failure"), {"fields": ("error_block", "traceback_block")}),
    )
    readonly_fields = (
        "handler_name",
        "event_link",
        "state_badge",
        "result_summary",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "duration",
        "celery_task_id",
        "celery_queue",
        "lease_expires_at",
        "replays",
        "replayed_at",
        "replayed_by",
        "previous_outcome",
        "error_block",
        "traceback_block",
    )

    @admin.display(description=_("state"), ordering="state")
    def state_badge(self, run: HandlerRun) -> str:
        return state_badge(run)

    @admin.display(description=_("state"), ordering="state")
    def state_and_attempts(self, run: HandlerRun) -> str:
        notes = []
        if run.attempts > 1:
            notes.append(
                ngettext("%(count)d attempt", "%(count)d attempts", run.attempts)
                % {"count": run.attempts}
            )
        if run.replays:
            notes.append(gettext("replayed %(count)d×") % {"count": run.replays})
        if not notes:
            return state_badge(run)
        return format_html(
            '{}<br><span class="s3tasks-quiet">{}</span>', state_badge(run), ", ".join(notes)
        )

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, run: HandlerRun) -> str:
        return compact_time(run.created_at)

    @admin.display(description=_("handler"), ordering="handler_name")
    def handler(self, run: HandlerRun) -> str:
        """The function's name, its module below it in small type."""
        module, _dot, function = run.handler_name.rpartition(".")
        return format_html(
            '<span title="{}">{}</span><br><span class="s3tasks-quiet">{}</span>',
            run.handler_name,
            function,
            module,
        )

    @admin.display(description=_("event"))
    def event_link(self, run: HandlerRun) -> str:
        url = reverse("admin:s3tasks_eventrecord_change", args=[run.event_id])
        return format_html(
            '<a href="{}" title="{}">{}</a><br><span class="s3tasks-quiet">{}</span>',
            url,
            str(run.event),
            run.event.event_name,
            clipped(f"s3://{run.event.bucket}/{run.event.key}", 48),
        )

    @admin.display(description=_("event and error"))
    def event_and_error(self, run: HandlerRun) -> str:
        """The event, and below it the first line of the error: the list's widest cell, so
        a separate error column does not push the table past a 1,400 px screen."""
        if not run.error:
            return self.event_link(run)
        return format_html(
            '{}<br><span class="s3tasks-error">{}</span>',
            self.event_link(run),
            self.short_error(run),
        )

    @admin.display(description=_("duration"), ordering="duration_ms")
    def duration(self, run: HandlerRun) -> str:
        return duration_cell(run)

    @admin.display(description=_("error"))
    def short_error(self, run: HandlerRun) -> str:
        line = first_line(run.error, limit=1000)
        if len(line) <= 80:
            return line
        return format_html('<span title="{}">{}…</span>', line, line[:79])

    @admin.display(description=_("error"))
    def error_block(self, run: HandlerRun) -> str:
        return pre(run.error)

    @admin.display(description=_("traceback"))
    def traceback_block(self, run: HandlerRun) -> str:
        return pre(run.traceback)

    def has_run_handlers_permission(self, request: HttpRequest) -> bool:
        """Retry and recover execute handler code: `s3tasks.run_handlers`."""
        return can_run_handlers(request)

    @admin.action(description=_("Retry selected failed runs"), permissions=["run_handlers"])
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet) -> None:

        retryable = (RunState.FAILED, RunState.RETRYING)
        failed = list(queryset.filter(state__in=retryable).select_related("event"))
        skipped = queryset.count() - len(failed)
        results = [retry_run(run) for run in failed]
        succeeded = sum(1 for r in results if r.ok and r.state == RunState.SUCCEEDED)
        queued = sum(1 for r in results if r.ok and r.state != RunState.SUCCEEDED)
        errors = [r for r in results if not r.ok]
        parts = [
            ngettext(
                "Retried %(count)d failed run: %(succeeded)d succeeded",
                "Retried %(count)d failed runs: %(succeeded)d succeeded",
                len(results),
            )
            % {"count": len(results), "succeeded": succeeded}
        ]
        if queued:
            parts.append(
                ngettext("%(count)d sent to Celery", "%(count)d sent to Celery", queued)
                % {"count": queued}
            )
        if skipped:
            parts.append(
                ngettext(
                    "%(count)d not failed, left alone", "%(count)d not failed, left alone", skipped
                )
                % {"count": skipped}
            )
        level = messages.WARNING if errors else messages.SUCCESS
        self.message_user(request, ", ".join(parts) + ".", level)
        for outcome in errors:
            # Never a handler name first: the admin capitalises a message's first letter.
            message = gettext("The retry of %(handler)s failed again: %(error)s") % {
                "handler": outcome.handler_name,
                "error": outcome.error,
            }
            self.message_user(request, message, messages.ERROR)

    @admin.action(
        description=_("Recover selected stuck runs (past their lease)"),
        permissions=["run_handlers"],
    )
    def recover_stuck_runs(self, request: HttpRequest, queryset: QuerySet) -> None:

        selected = list(queryset.values_list("pk", flat=True))
        report = drive_runs(selected, RecoveryReport())
        self.message_user(
            request,
            recovery_summary(report),
            messages.WARNING if report.errors or report.count("no_handler") else messages.SUCCESS,
        )
        for error in report.errors:
            message = gettext("Could not recover %(error)s") % {"error": error}
            self.message_user(request, message, messages.ERROR)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("kind", "target", "created_at", "sent_at", "attempts", "last_error")
    list_filter = ("kind", ("sent_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("target", "idempotency_key")
    date_hierarchy = "created_at"
    readonly_fields = (
        "kind",
        "target",
        "pretty_payload",
        "idempotency_key",
        "created_at",
        "available_at",
        "sent_at",
        "attempts",
        "last_error",
    )
    exclude = ("payload",)

    @admin.display(description=_("payload"))
    def pretty_payload(self, message: OutboxMessage) -> str:
        return pretty_json(message.payload)


@admin.register(MessageFailure)
class MessageFailureAdmin(ReadOnlyAdmin):
    """Messages no envelope parser understood, as `sqs_worker` recorded them (the message
    itself is left in SQS to reach the dead-letter queue)."""

    list_display = (
        "message_id",
        "queue_name",
        "short_reason",
        "receive_count",
        "first_seen_at",
        "last_seen_at",
    )
    list_filter = ("queue_name", "last_seen_at")
    search_fields = ("message_id", "queue_name", "reason")
    date_hierarchy = "last_seen_at"
    fields = (
        "queue_name",
        "message_id",
        "receive_count",
        "first_seen_at",
        "last_seen_at",
        "reason_block",
        "body_block",
    )
    readonly_fields = fields

    @admin.display(description=_("reason"))
    def short_reason(self, failure: MessageFailure) -> str:
        return first_line(failure.reason)

    @admin.display(description=_("reason"))
    def reason_block(self, failure: MessageFailure) -> str:
        return pre(failure.reason)

    @admin.display(description=_("body excerpt"))
    def body_block(self, failure: MessageFailure) -> str:
        return pre(failure.body_excerpt)
