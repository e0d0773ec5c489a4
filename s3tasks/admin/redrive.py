"""The "Redrive dead-letter messages to this queue" action on `Queue`.

The first call shows each selected queue's dead-letter queue and how many messages it holds,
with a form for how many to move; the confirmation moves up to that many from each, by
`s3tasks.ops.redrive` (send before delete), and reports the counts. Registered on
`QueueAdmin` with `actions = [redrive_dead_letters]` and
`has_redrive_permission = has_redrive_permission`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from s3tasks import aws
from s3tasks.exceptions import S3TasksError
from s3tasks.models import Queue
from s3tasks.ops.redrive import RedriveReport, redrive
from s3tasks.ops.redrive_queues import RedrivePlan, queue_depth, resolve_for_source

logger = logging.getLogger(__name__)

# A custom permission (`Queue.Meta.permissions`): redrive moves messages in SQS with the web
# process's credentials, which permission to edit the rows does not imply.
REDRIVE_QUEUE = "s3tasks.redrive_queue"
DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000  # one web request; larger dead-letter queues: `manage.py s3tasks_redrive`
TEMPLATE = "admin/s3tasks/queue/redrive_confirmation.html"


def has_redrive_permission(modeladmin: admin.ModelAdmin, request: HttpRequest) -> bool:
    """`QueueAdmin.has_redrive_permission`: the action is offered only to holders of
    `s3tasks.redrive_queue`, which no edit permission implies."""
    return request.user.has_perm(REDRIVE_QUEUE)


class RedriveForm(forms.Form):
    limit = forms.IntegerField(
        label=gettext_lazy("Most messages to move from each dead-letter queue"),
        min_value=1,
        max_value=MAX_LIMIT,
        initial=DEFAULT_LIMIT,
    )


@dataclass
class QueueToRedrive:
    """One selected queue on the confirmation page: its plan and DLQ depth, or why not."""

    queue: Queue
    plan: RedrivePlan | None = None
    waiting: int | None = None  # visible in the dead-letter queue
    in_flight: int | None = None
    error: str = ""


def look_up(queue: Queue) -> QueueToRedrive:
    """`queue`'s dead-letter queue and its depth, or the reason it cannot be redriven."""
    found = QueueToRedrive(queue)
    try:
        found.plan = resolve_for_source(queue.name)
        found.waiting, found.in_flight = queue_depth(
            aws.client("sqs"), found.plan.dead_letter_queue
        )
    except S3TasksError as exc:  # unknown queue, no DLQ, a shared DLQ: the user can fix it
        found.error = str(exc)
    except Exception as exc:  # AWS unreachable or refusing: say so instead of a 500
        logger.exception("s3tasks: reading %s's dead-letter queue failed", queue.name)
        found.error = _("Could not read the queue in SQS: %(error)s") % {
            "error": f"{type(exc).__name__}: {exc}"
        }
    return found


@admin.action(
    description=gettext_lazy("Redrive dead-letter messages to this queue"),
    permissions=["redrive"],
)
def redrive_dead_letters(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> TemplateResponse | None:
    """First call: the confirmation page. Its POST (`post=yes`): move and report."""
    selected = [look_up(queue) for queue in queryset]
    confirmed = request.POST.get("post") == "yes"
    form = RedriveForm(request.POST if confirmed else None)
    if confirmed and form.is_valid():
        for found in selected:
            _move(modeladmin, request, found, form.cleaned_data["limit"])
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Redrive dead-letter messages"),
        "opts": modeladmin.model._meta,
        "selected": selected,
        "movable": any(found.plan for found in selected),
        "form": form,
        "queryset": queryset,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action_name": "redrive_dead_letters",
        "media": modeladmin.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, TEMPLATE, context)


def _move(
    modeladmin: admin.ModelAdmin, request: HttpRequest, found: QueueToRedrive, limit: int
) -> None:
    if found.plan is None:
        modeladmin.message_user(request, f"{found.queue.name}: {found.error}", messages.ERROR)
        return
    try:
        report = redrive(found.plan, max_messages=limit)
    except Exception as exc:  # an S3TasksError or AWS refusing before anything moved
        logger.exception("s3tasks: redriving into %s failed", found.queue.name)
        message = _("Redrive into %(queue)s failed: %(error)s")
        modeladmin.message_user(
            request, message % {"queue": found.queue.name, "error": exc}, messages.ERROR
        )
        return
    level = messages.SUCCESS if report.ok else messages.WARNING
    modeladmin.message_user(request, summary(found.queue.name, report), level)


def summary(queue_name: str, report: RedriveReport) -> str:
    """The counts of one redrive, as the admin message says them."""
    values = {
        "moved": report.moved,
        "dlq": report.plan.dead_letter_queue.name,
        "queue": queue_name,
        "failed": report.failed,
        "left": "?" if report.left is None else report.left,
        "not_deleted": report.not_deleted,
    }
    moved = ngettext(
        "Moved %(moved)d message from %(dlq)s to %(queue)s; about %(left)s left in the "
        "dead-letter queue.",
        "Moved %(moved)d messages from %(dlq)s to %(queue)s; about %(left)s left in the "
        "dead-letter queue.",
        report.moved,
    )
    parts = [moved % values]
    if report.failed:
        failed = ngettext(
            "%(failed)d could not be moved and stays in the dead-letter queue:",
            "%(failed)d could not be moved and stay in the dead-letter queue:",
            report.failed,
        )
        parts += [failed % values, "; ".join(report.failure_reasons) + "."]
    if report.not_deleted:
        not_deleted = _(
            "%(not_deleted)d moved but still in the dead-letter queue (a later redrive sends "
            "them again; s3tasks runs each event once)."
        )
        parts.append(not_deleted % values)
    return " ".join(parts + report.errors)
