"""What `manage.py s3tasks_backfill` shows: the live progress (a rich bar on a terminal, log
lines otherwise), the summary table and the JSON report."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from s3tasks.management.terminal import TerminalOut
from s3tasks.models import Backfill
from s3tasks.ops.backfill import Counters

logger = logging.getLogger("s3tasks.backfill")

LOG_INTERVAL = 5.0  # seconds between progress lines when stdout is not a terminal

COLUMNS = ("matched", "dispatched", "skipped", "failed")


def summary_table(counters: Counters, *, dry_run: bool = False) -> str:
    """Per handler: objects matched, and its runs dispatched, skipped as already done, failed;
    then the totals (objects listed and matched; runs, one per object and handler)."""
    columns = COLUMNS[:1] if dry_run else COLUMNS
    names = sorted(counters.per_handler)
    width = max([len("handler"), *map(len, names)])
    lines = [f"{'handler':<{width}}  " + "  ".join(f"{c:>10}" for c in columns)]
    for name in names:
        counts = counters.per_handler[name]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{counts.get(c, 0):>10}" for c in columns))
    total = (
        f"listed {counters.listed} object(s) in {counters.pages} page(s); "
        f"{counters.matched} matched a handler"
    )
    if not dry_run:
        total += (
            f"; runs: {counters.dispatched} dispatched, {counters.skipped} skipped as already "
            f"done, {counters.failed} failed"
        )
    return "\n".join([*lines, total])


def counters_json(counters: Counters) -> dict[str, Any]:
    return {
        "pages": counters.pages,
        "listed": counters.listed,
        "matched": counters.matched,
        "dispatched": counters.dispatched,
        "skipped": counters.skipped,
        "failed": counters.failed,
        "handlers": counters.per_handler,
        "errors": counters.errors,
    }


def report_of(row: Backfill, counters: Counters, seconds: float) -> dict[str, Any]:
    return {
        "backfill": row.pk,
        "state": row.state,
        "bucket": row.bucket,
        "prefix": row.prefix,
        "suffix": row.suffix,
        "mode": row.mode,
        "requested_handlers": row.handlers,
        "resume_after": row.resume_after,
        **counters_json(counters),
        "elapsed_seconds": round(seconds, 3),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")


def counter_text(counters: Counters) -> str:
    return (
        f"matched {counters.matched} · dispatched {counters.dispatched} · "
        f"skipped {counters.skipped} · failed {counters.failed}"
    )


class LogProgress:
    """Progress as a log line at most every `LOG_INTERVAL` seconds (no terminal)."""

    def __init__(self, backfill_id: int, expected: int | None, listed_before: int = 0) -> None:
        self.backfill_id, self.expected = backfill_id, expected
        self.start_listed = listed_before  # a resumed backfill's pace counts from now
        self.started = self.last = time.monotonic()

    def __call__(self, counters: Counters) -> None:
        now = time.monotonic()
        if now - self.last < LOG_INTERVAL:
            return
        self.last = now
        done = counters.listed - self.start_listed
        speed = done / (now - self.started) if now > self.started else 0.0
        of = f"/{self.expected}" if self.expected is not None else ""
        logger.info(
            "s3tasks backfill %s: listed %d%s (%.0f objects/s), %s",
            self.backfill_id,
            counters.listed,
            of,
            speed,
            counter_text(counters),
        )


def rich_progress(out: Any) -> Any:
    """A rich `Progress` writing to the command's stdout, or None without rich."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text
    except ImportError:  # rich is optional (the demo extra): log lines instead
        return None

    class SpeedColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:,.0f} objects/s")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        SpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counters]}"),
    )
    return Progress(*columns, console=Console(file=TerminalOut(out)), transient=False)
