"""The "Replay selected runs" action on `HandlerRun`: run handlers again for recorded events.

The first call shows how many of the selected runs would be replayed (ended: succeeded, or
failed for good) and how many are skipped (in flight, or their handler missing from this
server); its confirmation replays them through `s3tasks.ops.replay` and reports the counts.
Needs `s3tasks.run_handlers` (`HandlerRunAdmin.has_run_handlers_permission`).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from s3tasks.ops.replay import ReplayReport, replay_runs
from s3tasks.processing.dispatch import local_handler
from s3tasks.processing.execution import TERMINAL_STATES

TEMPLATE = "admin/s3tasks/handlerrun/replay_confirmation.html"


@admin.action(description=gettext_lazy("Replay selected runs"), permissions=["run_handlers"])
def replay_selected_runs(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> TemplateResponse | None:
    """First call: the confirmation page. Its POST (`post=yes`): replay and report."""
    if request.POST.get("post") == "yes":
        by = request.user.get_username() or str(request.user.pk)
        result = replay_runs(queryset, by=f"admin ({by})")
        level = messages.WARNING if result.count("failed") else messages.SUCCESS
        modeladmin.message_user(request, replay_summary(result), level)
        for error in result.errors:
            modeladmin.message_user(
                request, _("Replay failed for %(error)s") % {"error": error}, messages.ERROR
            )
        return None
    by_handler = queryset.values("handler_name", "state").annotate(n=Count("pk")).order_by()
    handlers: dict[str, dict[str, int]] = {}
    for row in by_handler:
        counts = handlers.setdefault(row["handler_name"], {"ended": 0, "in_flight": 0})
        counts["ended" if row["state"] in TERMINAL_STATES else "in_flight"] += row["n"]
    rows = [
        {"name": name, **counts, "registered": local_handler(name) is not None}
        for name, counts in sorted(handlers.items())
    ]
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Replay handler runs"),
        "opts": modeladmin.model._meta,
        "handlers": rows,
        "replayable": sum(r["ended"] for r in rows if r["registered"]),
        "selected_count": sum(r["ended"] + r["in_flight"] for r in rows),
        "queryset": queryset,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action_name": "replay_selected_runs",
        "select_across": request.POST.get("select_across", "0"),
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "media": modeladmin.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, TEMPLATE, context)


def replay_summary(result: ReplayReport) -> str:
    """One sentence with the counts of one replay request."""
    replayed = result.count("replayed")
    succeeded = replayed - result.sent
    parts = [
        ngettext(
            "Replayed %(count)d run: %(succeeded)d succeeded",
            "Replayed %(count)d runs: %(succeeded)d succeeded",
            replayed,
        )
        % {"count": replayed, "succeeded": succeeded}
    ]
    counted = (
        (
            result.sent,
            ngettext("%(count)d sent to Celery", "%(count)d sent to Celery", result.sent),
        ),
        (
            result.count("failed"),
            ngettext("%(count)d failed", "%(count)d failed", result.count("failed")),
        ),
        (
            result.count("in_flight"),
            ngettext(
                "%(count)d in flight, left alone",
                "%(count)d in flight, left alone",
                result.count("in_flight"),
            ),
        ),
        (
            result.count("no_handler"),
            ngettext(
                "%(count)d needs a handler this server lacks",
                "%(count)d need a handler this server lacks",
                result.count("no_handler"),
            ),
        ),
    )
    parts += [text % {"count": count} for count, text in counted if count]
    return ", ".join(parts) + "."
