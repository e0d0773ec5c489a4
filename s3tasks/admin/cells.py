"""How history reads in the admin's lists and pages: state colours, durations, compact times,
long text clipped with the whole of it on hover."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.formats import date_format, time_format
from django.utils.html import format_html
from django.utils.translation import gettext

from s3tasks.models import HandlerRun, RunState
from s3tasks.text import duration_text

STATE_COLOURS = {
    RunState.SUCCEEDED: "#2e7d32",
    RunState.FAILED: "#c62828",
    RunState.RETRYING: "#ef6c00",
    RunState.RUNNING: "#1565c0",
    RunState.PENDING: "#757575",
}


def pre(text: str) -> str:
    return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text) if text else "—"


def first_line(text: str, limit: int = 100) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0][:limit] if stripped else "—"


def pretty_json(value: Any) -> str:
    return pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def duration_cell(run: HandlerRun) -> str:
    """Humanized ("210 ms", "2 min 3 s"), the exact milliseconds on hover."""
    if run.duration_ms is None:
        return "—"
    return format_html(
        '<span title="{}">{}</span>',
        gettext("%(ms)s ms") % {"ms": f"{run.duration_ms:.3f}"},
        duration_text(run.duration_ms),
    )


def compact_time(value: datetime | None) -> str:
    """Date over time, so a list column stays narrow; the full timestamp on hover."""
    if value is None:
        return "—"
    when = timezone.localtime(value)
    return format_html(
        '<span title="{}">{}<br>{}</span>',
        when.isoformat(sep=" ", timespec="seconds"),
        date_format(when, "SHORT_DATE_FORMAT"),
        time_format(when, "TIME_FORMAT"),
    )


def clipped(text: str, limit: int) -> str:
    """At most `limit` characters, keeping the end (a key's file name); the whole on hover."""
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">…{}</span>', text, text[-(limit - 1) :])


def state_badge(run: HandlerRun) -> str:
    return format_html(
        '<span style="color:{};font-weight:bold">{}</span>',
        STATE_COLOURS.get(run.state, "#757575"),
        run.get_state_display(),
    )
