"""The "Sync to AWS" admin action: plan on a confirmation page, apply on confirm."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from s3tasks.exceptions import S3TasksError
from s3tasks.provisioning.apply import blocked_message
from s3tasks.provisioning.service import apply_plan, compute_plan

logger = logging.getLogger(__name__)

# A custom permission (`Bucket.Meta.permissions`): sync changes AWS with the web process's
# credentials, which permission to edit the rows does not imply.
SYNC_TO_AWS = "s3tasks.sync_to_aws"


def can_sync_to_aws(request: HttpRequest) -> bool:
    return request.user.has_perm(SYNC_TO_AWS)


def _plan_or_error(names: list[str], adopt: bool) -> tuple[Any, str]:
    """The sync plan for these buckets, or a readable reason it could not be computed."""

    try:
        return compute_plan(names, adopt=adopt), ""
    except S3TasksError as exc:  # overlapping rules, bad configuration: the user can fix it
        return None, str(exc)
    except Exception as exc:  # AWS unreachable or refusing: say so instead of a 500
        logger.exception("s3tasks: computing the sync plan failed")
        return None, _("Could not read the current AWS configuration: %(error)s") % {
            "error": f"{type(exc).__name__}: {exc}"
        }


def _report_apply(modeladmin: admin.ModelAdmin, request: HttpRequest, result: Any) -> None:
    """Turn an `ApplyResult` into admin messages: what was done, and the failure if any."""
    done = len(result.applied)
    if result.ok:
        message = ngettext(
            "Synced to AWS: %(count)d change applied.",
            "Synced to AWS: %(count)d changes applied.",
            done,
        )
        modeladmin.message_user(request, message % {"count": done}, messages.SUCCESS)
        return
    message = ngettext(
        "Sync failed at “%(step)s” after %(count)d change: %(error)s",
        "Sync failed at “%(step)s” after %(count)d changes: %(error)s",
        done,
    )
    values = {"step": result.failed_step.message, "count": done, "error": result.error}
    modeladmin.message_user(request, message % values, messages.ERROR)


def sync_buckets_action(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> TemplateResponse | None:
    """First call: show the plan. Second call (the confirmation POST): apply it.

    The plan is recomputed on confirm rather than carried in the form, so what is applied is
    always computed from the current models and the current AWS state. A plan blocked by
    resources s3tasks did not make offers to review it with adoption (`adopt=yes`, the
    command's `--adopt`), which is then applied like any other plan.
    """

    names = sorted(queryset.values_list("name", flat=True))
    adopt = request.POST.get("adopt") == "yes"
    plan, error = _plan_or_error(names, adopt)
    if plan is None:
        modeladmin.message_user(request, error, messages.ERROR)
        return None
    if request.POST.get("post") == "yes":
        if plan.blocked:
            modeladmin.message_user(request, blocked_message(plan), messages.ERROR)
            return None
        try:
            # Applied even when empty: that records "in sync" and clears the pending edits.
            result = apply_plan(plan)
        except Exception as exc:
            logger.exception("s3tasks: applying the sync plan failed")
            modeladmin.message_user(
                request, _("Sync failed: %(error)s") % {"error": exc}, messages.ERROR
            )
            return None
        if not plan.has_changes:
            modeladmin.message_user(
                request, _("Nothing to do: AWS already matches."), messages.INFO
            )
            return None
        _report_apply(modeladmin, request, result)
        return None
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Sync to AWS: review the plan"),
        "opts": opts,
        "buckets": names,
        "queryset": queryset,
        "plan": plan,
        "steps": list(plan.changes),
        "notes": list(plan.notes),
        "foreign": list(plan.foreign),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action_name": "sync_to_aws",
        "media": modeladmin.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/s3tasks/bucket/sync_confirmation.html", context)
