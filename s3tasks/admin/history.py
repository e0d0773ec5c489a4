"""Admin for what happened: events, handler runs, follow-up commands. View-only by design:
history is evidence, so nobody edits or adds it; the only writes are retries."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html

from s3tasks.admin.views import can_run_handlers, send_test_event_view
from s3tasks.models import EventRecord, HandlerRun, OutboxMessage, RunState
from s3tasks.ops.recovery import RecoveryReport, drive_runs
from s3tasks.processing.dispatch import retry_run

STATE_COLOURS = {
    RunState.SUCCEEDED: "#2e7d32",
    RunState.FAILED: "#c62828",
    RunState.RETRYING: "#ef6c00",
    RunState.RUNNING: "#1565c0",
    RunState.PENDING: "#757575",
}


def pre(text: str) -> str:
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text) if text else "—"


def pretty_json(value: Any) -> str:
    return pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


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
    fields = ("handler_name", "state_badge", "attempts", "duration_ms", "finished_at", "error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="state")
    def state_badge(self, run: HandlerRun) -> str:
        return state_badge(run)


def state_badge(run: HandlerRun) -> str:
    return format_html(
        '<span style="color:{};font-weight:bold">{}</span>',
        STATE_COLOURS.get(run.state, "#757575"),
        run.get_state_display(),
    )


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
        ("Identity", {"fields": ("dedup_key", "version_id", "sequencer", "region")}),
        ("Delivery", {"fields": ("event_time", "received_at", "message_id", "queue_name")}),
        ("Payload", {"fields": ("pretty_payload",)}),
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

    @admin.display(description="runs")
    def run_states(self, record: EventRecord) -> str:
        runs = list(record.runs.all())
        if not runs:
            return "no handler"
        return format_html(
            " ".join(["{}"] * len(runs)),
            *(
                format_html("{}: {}", r.handler_name.rsplit(".", 1)[-1], state_badge(r))
                for r in runs
            ),
        )

    @admin.display(description="payload (normalized event and raw record)")
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


@admin.register(HandlerRun)
class HandlerRunAdmin(ReadOnlyAdmin):
    list_display = (
        "handler_name",
        "event_link",
        "state_badge",
        "attempts",
        "duration_ms",
        "created_at",
        "finished_at",
        "short_error",
    )
    list_filter = ("state", "handler_name", "created_at")
    search_fields = ("handler_name", "event__bucket", "event__key", "celery_task_id")
    date_hierarchy = "created_at"
    list_select_related = ("event",)
    actions = ["retry_failed_runs", "recover_stuck_runs"]
    fieldsets = (
        (None, {"fields": ("handler_name", "event_link", "state_badge", "result_summary")}),
        (
            "Timing",
            {"fields": ("attempts", "created_at", "started_at", "finished_at", "duration_ms")},
        ),
        ("Celery", {"fields": ("celery_task_id", "celery_queue", "lease_expires_at")}),
        ("Failure", {"fields": ("error_block", "traceback_block")}),
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
        "duration_ms",
        "celery_task_id",
        "celery_queue",
        "lease_expires_at",
        "error_block",
        "traceback_block",
    )

    @admin.display(description="state", ordering="state")
    def state_badge(self, run: HandlerRun) -> str:
        return state_badge(run)

    @admin.display(description="event")
    def event_link(self, run: HandlerRun) -> str:
        url = reverse("admin:s3tasks_eventrecord_change", args=[run.event_id])
        return format_html('<a href="{}">{}</a>', url, str(run.event))

    @admin.display(description="error")
    def short_error(self, run: HandlerRun) -> str:
        first = run.error.strip().splitlines()[0] if run.error.strip() else ""
        return first[:100] or "—"

    @admin.display(description="error")
    def error_block(self, run: HandlerRun) -> str:
        return pre(run.error)

    @admin.display(description="traceback")
    def traceback_block(self, run: HandlerRun) -> str:
        return pre(run.traceback)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return can_run_handlers(request)

    @admin.action(description="Retry selected failed runs", permissions=["retry"])
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet) -> None:

        retryable = (RunState.FAILED, RunState.RETRYING)
        failed = list(queryset.filter(state__in=retryable).select_related("event"))
        skipped = queryset.count() - len(failed)
        results = [retry_run(run) for run in failed]
        succeeded = sum(1 for r in results if r.ok and r.state == RunState.SUCCEEDED)
        queued = sum(1 for r in results if r.ok and r.state != RunState.SUCCEEDED)
        errors = [r for r in results if not r.ok]
        parts = [f"Retried {len(results)} failed run(s): {succeeded} succeeded"]
        if queued:
            parts.append(f"{queued} sent to Celery")
        if skipped:
            parts.append(f"{skipped} not failed, left alone")
        level = messages.WARNING if errors else messages.SUCCESS
        self.message_user(request, ", ".join(parts) + ".", level)
        for outcome in errors:
            self.message_user(
                request, f"{outcome.handler_name} failed again: {outcome.error}", messages.ERROR
            )

    @admin.action(
        description="Recover selected stuck runs (past their lease)", permissions=["retry"]
    )
    def recover_stuck_runs(self, request: HttpRequest, queryset: QuerySet) -> None:

        selected = list(queryset.values_list("pk", flat=True))
        report = drive_runs(selected, RecoveryReport())
        parts = []
        if report.count("resent"):
            parts.append(f"{report.count('resent')} stuck run(s) re-sent to Celery")
        if report.count("ran"):
            parts.append(f"{report.count('ran')} stuck run(s) run again")
        if report.count("left_alone"):
            parts.append(
                f"{report.count('left_alone')} not stuck (finished or in time), left alone"
            )
        if report.count("no_handler"):
            parts.append(f"{report.count('no_handler')} need a handler this server lacks")
        level = (
            messages.WARNING if report.errors or report.count("no_handler") else messages.SUCCESS
        )
        self.message_user(request, "; ".join(parts or ["Nothing to recover"]) + ".", level)
        for error in report.errors:
            self.message_user(request, f"Could not recover {error}", messages.ERROR)


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

    @admin.display(description="payload")
    def pretty_payload(self, message: OutboxMessage) -> str:
        return pretty_json(message.payload)
