"""The operations dashboard: one admin page with the health of the whole pipeline.

Runs per state per handler over the last hour or day (a server-rendered SVG chart), p50/p95
duration and failure rate per handler, runs stuck past their lease with the recovery action,
each queue's and dead-letter queue's depth and oldest message age, and the live workers. It
reloads its panels every `REFRESH_SECONDS` (`static/s3tasks/dashboard_refresh.js`).

The admin index lists it through the `OperationsDashboard` proxy model (see its module); the
page needs `s3tasks.view_handlerrun`, recovering stuck runs `s3tasks.run_handlers`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from s3tasks.admin.cells import STATE_COLOURS
from s3tasks.admin.history import recovery_summary
from s3tasks.admin.views import can_run_handlers
from s3tasks.models import HandlerRun, OperationsDashboard, RunState, WorkerHeartbeat
from s3tasks.ops.queue_depths import QueueDepth, QueueDepths, read_queue_depths, watched_queues
from s3tasks.ops.recovery import find_stuck_runs, recover_stuck_runs, stuck_filter
from s3tasks.ops.run_stats import HandlerFigures, handler_figures
from s3tasks.text import duration_text

REFRESH_SECONDS = 10
WINDOWS = {"hour": (timedelta(hours=1), _("Last hour")), "day": (timedelta(days=1), _("Last day"))}
STUCK_SHOWN = 10
HIGH_FAILURE_RATE = 0.05  # a handler failing more often than this is shown in red
# Stacked from the left in this order: the finished first, then what is still under way.
CHART_STATES = (
    RunState.SUCCEEDED,
    RunState.FAILED,
    RunState.RETRYING,
    RunState.RUNNING,
    RunState.PENDING,
)
# The worker's counters shown in its row (all of them are in the row's details).
WORKER_COUNTERS = {
    "received": _("received"),
    "handled": _("handled"),
    "failed": _("failed"),
    "in_flight": _("in flight"),
}
PAGE_TEMPLATE = "admin/s3tasks/dashboard/page.html"
PANELS_TEMPLATE = "admin/s3tasks/dashboard/panels.html"


# --- the chart: bars per handler, stacked by state (pure geometry) -------------------------


@dataclass(frozen=True)
class Segment:
    state: str
    label: str
    count: int
    x: int
    width: int
    colour: str


@dataclass(frozen=True)
class Bar:
    handler_name: str
    label: str
    y: int
    text_y: int  # the baseline of its label and total
    total: int
    end: int  # where the bar ends: its total is written after it
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    label_width: int
    bar_height: int
    bars: tuple[Bar, ...]

    @property
    def label_x(self) -> int:
        return self.label_width - 8  # labels end here, right-aligned


def stacked_bars(
    figures: Sequence[HandlerFigures],
    *,
    width: int = 1000,
    label_width: int = 220,
    bar_height: int = 18,
    gap: int = 8,
) -> Chart:
    """One horizontal bar per handler, as long as its runs relative to the busiest handler's,
    split by state in `CHART_STATES` order. Whole pixels; a state with runs is never less than
    one pixel wide."""
    room = width - label_width - 56  # the total is written after the bar
    top = max((f.total for f in figures), default=0)
    labels = dict(RunState.choices)
    bars = []
    for row, f in enumerate(figures):
        segments, done = [], 0
        for state in CHART_STATES:
            count = f.count(state)
            if not count:
                continue
            start = label_width + round(room * done / top)
            done += count
            end = label_width + round(room * done / top)
            segments.append(
                Segment(
                    state, str(labels[state]), count, start, max(1, end - start), _colour(state)
                )
            )
        last = segments[-1] if segments else None
        bars.append(
            Bar(
                handler_name=f.handler_name,
                label=_short_handler(f.handler_name),
                y=gap + row * (bar_height + gap),
                text_y=gap + row * (bar_height + gap) + bar_height - 5,
                total=f.total,
                end=(last.x + last.width) if last else label_width,
                segments=tuple(segments),
            )
        )
    height = gap + len(bars) * (bar_height + gap)
    return Chart(width, height, label_width, bar_height, tuple(bars))


def _colour(state: str) -> str:
    return STATE_COLOURS.get(RunState(state), "#757575")


def _short_handler(name: str, limit: int = 28) -> str:
    function = name.rpartition(".")[2]
    return function if len(function) <= limit else function[: limit - 1] + "…"


# --- what each panel shows ---------------------------------------------------------------


@dataclass(frozen=True)
class HandlerRow:
    figures: HandlerFigures
    p50: str
    p95: str
    failure_rate: str
    failing: bool
    runs_url: str


@dataclass(frozen=True)
class WorkerRow:
    worker: WorkerHeartbeat
    gone: bool
    seen_ago: str
    up_for: str
    counters: tuple[tuple[str, Any], ...]
    counters_json: str


def handler_rows(figures: Sequence[HandlerFigures], since: datetime) -> list[HandlerRow]:
    changelist = reverse("admin:s3tasks_handlerrun_changelist")
    rows = []
    for f in figures:
        rate = f.failure_rate
        query = urlencode({"handler_name": f.handler_name, "created_at__gte": since.isoformat()})
        rows.append(
            HandlerRow(
                figures=f,
                p50=duration_text(f.p50_ms),
                p95=duration_text(f.p95_ms),
                failure_rate="—" if rate is None else f"{rate:.1%}",
                failing=rate is not None and rate > HIGH_FAILURE_RATE,
                runs_url=f"{changelist}?{query}",
            )
        )
    return rows


def worker_rows(workers: Sequence[WorkerHeartbeat], now: datetime) -> list[WorkerRow]:
    rows = []
    for worker in workers:
        counters = worker.counters if isinstance(worker.counters, dict) else {}
        rows.append(
            WorkerRow(
                worker=worker,
                gone=worker.is_gone(now),
                seen_ago=_ago(now - worker.last_seen_at),
                up_for=_seconds_text(worker.last_seen_at - worker.started_at),
                counters=tuple(
                    (str(label), counters[name])
                    for name, label in WORKER_COUNTERS.items()
                    if name in counters
                ),
                counters_json=json.dumps(counters, indent=1, sort_keys=True),
            )
        )
    return rows


def _seconds_text(span: timedelta) -> str:
    """In whole seconds: "4 s", "2 min 3 s"."""
    return duration_text(round(max(span.total_seconds(), 0)) * 1000)


def _ago(span: timedelta) -> str:
    if span.total_seconds() < 1:
        return gettext("just now")
    return gettext("%(span)s ago") % {"span": _seconds_text(span)}


@dataclass(frozen=True)
class QueueSide:
    """A queue's or dead-letter queue's cells: numbers, or why they are unavailable."""

    name: str
    waiting: int | None
    in_flight: int | None
    age: str
    problem: str
    age_problem: str


@dataclass(frozen=True)
class QueueRow:
    name: str
    enabled: bool
    queue: QueueSide
    dead_letter: QueueSide | None


def queue_side(depth: QueueDepth) -> QueueSide:
    age = duration_text(depth.oldest_age * 1000) if depth.oldest_age is not None else "—"
    return QueueSide(
        depth.name,
        depth.waiting,
        depth.in_flight,
        age,
        depth.problem,
        depth.age_problem,
    )


def queue_rows(queues: Sequence[QueueDepths]) -> list[QueueRow]:
    return [
        QueueRow(
            q.watched.name,
            q.watched.enabled,
            queue_side(q.queue),
            queue_side(q.dead_letter) if q.dead_letter else None,
        )
        for q in queues
    ]


def summary(
    figures: Sequence[HandlerFigures],
    stuck: int,
    queues: Sequence[QueueDepths],
    workers: Sequence[WorkerRow],
) -> dict[str, Any]:
    """The headline numbers shown above the panels."""
    failed = sum(f.count(RunState.FAILED) for f in figures)
    finished = failed + sum(f.count(RunState.SUCCEEDED) for f in figures)
    dead_letters = [q.dead_letter.waiting for q in queues if q.dead_letter is not None]
    return {
        "runs": sum(f.total for f in figures),
        "failed": failed,
        "failure_rate": f"{failed / finished:.1%}" if finished else "—",
        "stuck": stuck,
        "dead_letters": sum(n for n in dead_letters if n),
        "dead_letters_unknown": any(n is None for n in dead_letters),
        "waiting": sum(q.queue.waiting or 0 for q in queues),
        "live_workers": sum(1 for w in workers if not w.gone),
        "gone_workers": sum(1 for w in workers if w.gone),
    }


# --- the admin -----------------------------------------------------------------------------


@admin.register(OperationsDashboard)
class OperationsDashboardAdmin(admin.ModelAdmin):
    """Not a list of rows: its only pages are the dashboard and the recover button's target."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return user.has_perm("s3tasks.view_handlerrun") or user.has_perm(
            "s3tasks.change_handlerrun"
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        changelist = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [
            # The changelist's name: the admin index and sidebar link to it.
            path("", wrap(self.dashboard_view), name=changelist),
            path(
                "recover/", wrap(require_POST(self.recover_view)), name="s3tasks_dashboard_recover"
            ),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = request.GET.get("window", "hour")
        if window not in WINDOWS:
            window = "hour"
        panels = request.GET.get("panels") == "1"
        context = {
            **({} if panels else self.admin_site.each_context(request)),
            **self.panels_context(request, window),
            "title": _("Operations dashboard"),
            "opts": self.opts,
            "refresh_seconds": REFRESH_SECONDS,
            "windows": [(key, label) for key, (_span, label) in WINDOWS.items()],
        }
        template = PANELS_TEMPLATE if panels else PAGE_TEMPLATE
        return TemplateResponse(request, template, context)

    def panels_context(self, request: HttpRequest, window: str) -> dict[str, Any]:
        now = timezone.now()
        span, label = WINDOWS[window]
        figures = handler_figures(now - span)
        stuck_total = HandlerRun.objects.filter(stuck_filter(now=now)).count()
        stuck = find_stuck_runs(limit=STUCK_SHOWN) if stuck_total else []
        queues = read_queue_depths(watched_queues())
        rows_of_queues = queue_rows(queues)
        workers = worker_rows(list(WorkerHeartbeat.objects.all()), now)
        ids = ",".join(str(run.run_id) for run in stuck)
        return {
            "now": now,
            "window": window,
            "window_label": label,
            "chart": stacked_bars(figures),
            "chart_states": [(str(RunState(s).label), _colour(s)) for s in CHART_STATES],
            "handlers": handler_rows(figures, now - span),
            "stuck_total": stuck_total,
            "stuck": stuck,
            "stuck_url": reverse("admin:s3tasks_handlerrun_changelist") + f"?id__in={ids}",
            "queues": rows_of_queues,
            "age_problems": sorted(
                {
                    side.age_problem
                    for row in rows_of_queues
                    for side in (row.queue, row.dead_letter)
                    if side and side.age_problem and not side.problem
                }
            ),
            "workers": workers,
            "summary": summary(figures, stuck_total, queues, workers),
            "can_recover": can_run_handlers(request),
            "can_redrive": request.user.has_perm("s3tasks.view_queue"),
        }

    def recover_view(self, request: HttpRequest) -> HttpResponse:
        """The panel's button: `recover_stuck_runs`, as the workers' timer does."""
        if not (self.has_view_permission(request) and can_run_handlers(request)):
            raise PermissionDenied
        report = recover_stuck_runs()
        trouble = report.errors or report.count("no_handler")
        level = messages.WARNING if trouble else messages.SUCCESS
        self.message_user(request, recovery_summary(report), level)
        for error in report.errors:
            message = gettext("Could not recover %(error)s") % {"error": error}
            self.message_user(request, message, messages.ERROR)
        window = request.POST.get("window", "hour")
        url = reverse("admin:s3tasks_operationsdashboard_changelist")
        return HttpResponseRedirect(f"{url}?window={window if window in WINDOWS else 'hour'}")
