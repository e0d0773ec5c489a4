"""Admin for what AWS should look like: buckets, topics, queues, rules and their handlers."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Field, QuerySet, URLField
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from s3tasks.admin.cells import compact_time
from s3tasks.admin.forms import HandlerBindingForm, S3EventPatternsField
from s3tasks.admin.history import ReadOnlyAdmin
from s3tasks.admin.redrive import has_redrive_permission, redrive_dead_letters
from s3tasks.admin.rule_runs import RULE_PARAMETER
from s3tasks.admin.sync import can_sync_to_aws, sync_buckets_action
from s3tasks.admin.views import which_handlers_view
from s3tasks.models import (
    Bucket,
    HandlerBinding,
    ManagedResource,
    NotificationRule,
    Queue,
    Subscription,
    Topic,
)
from s3tasks.models.config import SyncStatus

SYNC_FIELDS = (
    "sync_status",
    "arn",
    "created_by_s3tasks",
    "last_sync_status",
    "last_sync_error",
    "last_synced_at",
)
STATUS_COLOURS = {
    SyncStatus.OK: "#2e7d32",
    SyncStatus.FAILED: "#c62828",
    SyncStatus.PENDING: "#ef6c00",
    SyncStatus.NEVER: "#757575",
}


def status_badge(obj: Any) -> str:
    colour = STATUS_COLOURS.get(obj.last_sync_status, "#757575")
    return format_html(
        '<span style="color:{};font-weight:bold">{}</span>',
        colour,
        obj.get_last_sync_status_display(),
    )


def sync_state(obj: Any) -> str:
    """The last sync's outcome, or, once edits were made after it, how many wait for a sync.

    Read from the row (`pending_changes`, counted as edits are saved) rather than from a
    plan, which would ask AWS once per row of the list.
    """
    pending = obj.pending_changes if obj.last_sync_status != SyncStatus.NEVER else 0
    if not pending:
        return status_badge(obj)
    count = ngettext("%(count)d change pending", "%(count)d changes pending", pending) % {
        "count": pending
    }
    line = format_html(
        '<span class="s3tasks-changes-pending" style="color:{};font-weight:bold">'
        '<span style="white-space:nowrap">{}</span> — '
        '<span style="white-space:nowrap">{}</span></span>',
        STATUS_COLOURS[SyncStatus.PENDING],
        count,
        gettext("sync to apply"),
    )
    if obj.last_sync_status == SyncStatus.FAILED:
        return format_html("{}<br>{}", status_badge(obj), line)
    return line


def short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SyncedResourceAdmin(admin.ModelAdmin):
    """Sync bookkeeping is written by sync only: shown, never edited."""

    readonly_fields = SYNC_FIELDS

    @admin.display(description=_("sync status"), ordering="last_sync_status")
    def sync_status(self, obj: Any) -> str:
        return sync_state(obj)

    @admin.display(description=_("last sync error"))
    def last_error(self, obj: Any) -> str:
        return short(obj.last_sync_error) or "—"

    @admin.display(description=_("last synced"), ordering="last_synced_at")
    def last_synced(self, obj: Any) -> str:
        return compact_time(obj.last_synced_at)


@admin.register(Bucket)
class BucketAdmin(SyncedResourceAdmin):
    list_display = (
        "name",
        "sync_status",
        "last_error",
        "last_synced",
        "notifications",
        "rule_count",
    )
    list_filter = ("last_sync_status", "manage_notifications")
    search_fields = ("name",)
    actions = ["sync_to_aws"]
    fieldsets = (
        (None, {"fields": ("name", "region", "manage_notifications", "create_if_missing")}),
        (_("Optional features"), {"fields": ("eventbridge_enabled", "cors_rules")}),
        (_("Sync"), {"fields": SYNC_FIELDS}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(rule_total=Count("rules"))

    @admin.display(boolean=True, description=_("notifications"), ordering="manage_notifications")
    def notifications(self, obj: Bucket) -> bool:
        """`manage_notifications` under a header short enough for a 1,400 px screen."""
        return obj.manage_notifications

    @admin.display(description=_("rules"), ordering="rule_total")
    def rule_count(self, obj: Bucket) -> int:
        return obj.rule_total

    def has_sync_permission(self, request: HttpRequest) -> bool:
        """Sync changes AWS: `s3tasks.sync_to_aws`, which no edit permission implies."""
        return can_sync_to_aws(request)

    @admin.action(description=_("Sync to AWS (shows the plan first)"), permissions=["sync"])
    def sync_to_aws(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return sync_buckets_action(self, request, queryset)


class SubscriptionInline(admin.TabularInline):
    model = Subscription
    extra = 0
    fields = ("topic", "queue", "endpoint", "raw_message_delivery", "filter_policy", "arn")
    readonly_fields = ("arn",)
    # SNS endpoints are https only (Django 6 also makes it the default scheme)
    formfield_overrides = {URLField: {"assume_scheme": "https"}}


@admin.register(Topic)
class TopicAdmin(SyncedResourceAdmin):
    list_display = ("name", "sync_status", "last_error", "last_synced", "arn")
    list_filter = ("last_sync_status",)
    search_fields = ("name",)
    inlines = [SubscriptionInline]


@admin.register(Queue)
class QueueAdmin(SyncedResourceAdmin):
    list_display = (
        "name",
        "enabled",
        "dead_letter_queue",
        "max_receive_count",
        "visibility_timeout",
        "sync_status",
        "last_error",
    )
    list_filter = ("enabled", "last_sync_status")
    search_fields = ("name",)
    readonly_fields = ("url", *SYNC_FIELDS)
    inlines = [SubscriptionInline]
    actions = [redrive_dead_letters]
    has_redrive_permission = has_redrive_permission


class HandlerBindingInline(admin.TabularInline):
    """Bindings of a rule; those mirrored from `@on_s3_event` are shown, not edited."""

    model = HandlerBinding
    form = HandlerBindingForm
    extra = 0

    def _from_code(self, obj: NotificationRule | None) -> bool:
        return bool(obj is not None and obj.declared_in_code)

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return 0 if obj is not None else 1

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if self._from_code(obj):
            return ("handler_name", "celery_queue", "access", "enabled")
        return ()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not self._from_code(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not self._from_code(obj) and super().has_delete_permission(request, obj)


@admin.register(NotificationRule)
class NotificationRuleAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "bucket",
        "event_list",
        "prefix",
        "suffix",
        "destination",
        "handler_list",
        "enabled",
        "origin",
        "runs_link",
    )
    list_filter = ("enabled", "declared_in_code", "bucket")
    search_fields = ("name", "bucket__name", "prefix", "suffix", "bindings__handler_name")
    list_select_related = ("bucket", "topic", "queue")
    inlines = [HandlerBindingInline]
    actions = ["enable_rules", "disable_rules"]
    fields = (
        "name",
        "bucket",
        "events",
        "prefix",
        "suffix",
        "topic",
        "queue",
        "enabled",
        "origin",
        "runs_link",
    )
    change_list_template = "admin/s3tasks/notificationrule/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("bindings")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.declared_in_code:
            # Declared in code: the next migrate would overwrite edits. Only on/off stays.
            return (
                "name",
                "bucket",
                "events",
                "prefix",
                "suffix",
                "topic",
                "queue",
                "origin",
                "runs_link",
            )
        return ("origin", "runs_link")

    def formfield_for_dbfield(
        self, db_field: Field, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "events":  # checkboxes of S3's event names, not a JSON textarea
            return S3EventPatternsField(label=capfirst(db_field.verbose_name))
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.declared_in_code:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description=_("events"))
    def event_list(self, obj: NotificationRule) -> str:
        return ", ".join(str(e) for e in obj.events)

    @admin.display(description=_("destination"))
    def destination(self, obj: NotificationRule) -> str:
        if obj.topic_id:
            return f"SNS {obj.topic}"
        return f"SQS {obj.queue}" if obj.queue_id else gettext("SQS (default queue)")

    @admin.display(description=_("handlers"))
    def handler_list(self, obj: NotificationRule) -> str:
        bindings = list(obj.bindings.all())
        if not bindings:
            return "—"
        return format_html_join(
            ", ",
            '<span style="{}">{}</span>',
            (
                ("" if b.enabled else "text-decoration:line-through", b.handler_name)
                for b in bindings
            ),
        )

    @admin.display(description=_("runs"))
    def runs_link(self, obj: NotificationRule) -> str:
        if obj.pk is None:
            return "—"
        url = reverse("admin:s3tasks_handlerrun_changelist")
        return format_html(
            '<a class="s3tasks-rule-runs" href="{}?{}={}">{}</a>',
            url,
            RULE_PARAMETER,
            obj.pk,
            gettext("See runs"),
        )

    @admin.display(description=_("declared"))
    def origin(self, obj: NotificationRule) -> str:
        if not obj.declared_in_code:
            return gettext("in the admin")
        if obj.code_location:
            return gettext("in code: %(location)s") % {"location": obj.code_location}
        return gettext("in code")

    @admin.action(description=_("Enable selected rules"), permissions=["change"])
    def enable_rules(self, request: HttpRequest, queryset: QuerySet) -> None:
        # queryset.update() (ConfigQuerySet) bumps the rules version: workers reload.
        count = queryset.update(enabled=True)
        message = ngettext("Enabled %(count)d rule.", "Enabled %(count)d rules.", count)
        self.message_user(request, message % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Disable selected rules"), permissions=["change"])
    def disable_rules(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.update(enabled=False)
        message = ngettext("Disabled %(count)d rule.", "Disabled %(count)d rules.", count)
        self.message_user(request, message % {"count": count}, messages.SUCCESS)

    def get_urls(self) -> list:
        custom = [
            path(
                "which-handlers/",
                self.admin_site.admin_view(which_handlers_view(self)),
                name="s3tasks_which_handlers",
            )
        ]
        return custom + super().get_urls()


@admin.register(ManagedResource)
class ManagedResourceAdmin(ReadOnlyAdmin):
    """What sync recorded as s3tasks' own in AWS: written by sync only, shown, never edited."""

    list_display = ("kind", "identifier", "origin", "region", "created_at")
    list_filter = ("kind", "origin")
    search_fields = ("identifier",)
