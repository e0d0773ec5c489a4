"""Admin for backfills: a read-only list with each one's progress, and a "cancel" action.

Backfills are started by `manage.py s3tasks_backfill`; the row is its record, so nobody adds
or edits one here. Cancelling sets the state to `cancelled`; the running command sees it
before its next chunk and stops (`--resume ID` goes on later).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from s3tasks.models import Backfill

# A custom permission (`Backfill.Meta.permissions`): stopping someone's backfill is not
# something the view permission implies.
CANCEL_BACKFILL = "s3tasks.cancel_backfill"
CANCELLABLE = (Backfill.State.RUNNING, Backfill.State.INTERRUPTED, Backfill.State.FAILED)


@admin.register(Backfill)
class BackfillAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "bucket",
        "prefix",
        "state",
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
    actions = ["cancel"]
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

    @admin.display(description=_("progress"))
    def progress(self, backfill: Backfill) -> str:
        """Objects listed (of how many, when counted) and the pace so far."""
        listed = f"{backfill.listed:,}"
        if backfill.expected:
            share = min(100.0, 100.0 * backfill.listed / backfill.expected)
            listed = f"{listed} / {backfill.expected:,} ({share:.0f} %)"
        speed = backfill.objects_per_second
        pace = _("%(speed)s objects/s") % {"speed": f"{speed:,.0f}"} if speed else ""
        return format_html("{}<br><small>{}</small>", listed, pace)

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
