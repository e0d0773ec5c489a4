"""Text for people: cut to the size of the columns that keep it (errors, summaries), and
durations said the way people read them."""

from __future__ import annotations

from django.utils.translation import gettext

ERROR_LIMIT = 2000  # characters of an error kept on a run or an outbox row
SUMMARY_LIMIT = 1000  # characters of a handler's result kept on its run


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut so nobody mistakes it for the whole."""
    return text if len(text) <= limit else text[: limit - 15] + " …[truncated]"


def duration_text(milliseconds: float | None) -> str:
    """`209.909` → "210 ms", `1500` → "1.5 s", `123000` → "2 min 3 s", `7_380_000` → "2 h 3 min";
    `None` (not finished) → "—"."""
    if milliseconds is None:
        return "—"
    if 0 < milliseconds < 0.5:
        return gettext("< 1 ms")
    if milliseconds < 999.5:
        return gettext("%(ms)d ms") % {"ms": round(max(milliseconds, 0))}
    seconds = milliseconds / 1000
    if seconds < 59.95:
        tenths = f"{seconds:.1f}".removesuffix(".0")
        return gettext("%(seconds)s s") % {"seconds": tenths}
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        if not rest:
            return gettext("%(minutes)d min") % {"minutes": minutes}
        return gettext("%(minutes)d min %(seconds)d s") % {"minutes": minutes, "seconds": rest}
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    if not minutes:
        return gettext("%(hours)d h") % {"hours": hours}
    return gettext("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": minutes}
