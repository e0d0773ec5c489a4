"""Text cut to the size of the columns that keep it (errors, summaries)."""

from __future__ import annotations

ERROR_LIMIT = 2000  # characters of an error kept on a run or an outbox row
SUMMARY_LIMIT = 1000  # characters of a handler's result kept on its run


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut so nobody mistakes it for the whole."""
    return text if len(text) <= limit else text[: limit - 15] + " …[truncated]"
