"""`manage.py s3tasks_replay`: run a handler again for events it already handled."""

from __future__ import annotations

import argparse
import getpass
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, QuerySet

from s3tasks.conf import DISPATCH_MODES, get_settings
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.management.commands.s3tasks_backfill import parse_when
from s3tasks.management.terminal import TerminalOut
from s3tasks.models import HandlerRun
from s3tasks.ops.replay import STATE_FILTERS, ReplayReport, replay_runs, select_runs
from s3tasks.rules.registry import registry

logger = logging.getLogger("s3tasks.replay")

LOG_INTERVAL = 5.0  # seconds between progress lines when stdout is not a terminal
SAMPLE = 10  # runs listed by --dry-run


class Command(BaseCommand):
    help = (
        "Run handler NAME again for events it already handled, recorded as a replay on each "
        "run (its `replays` counter, who and when; attempts count anew). Only ended runs "
        "(succeeded, or failed for good) are replayed; runs in flight are skipped. A duplicate "
        "delivery still runs nothing twice. Exit status 1 when a replay failed. See "
        "docs/backfill.md, 'Replay from history'."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--handler",
            required=True,
            metavar="NAME",
            help="The handler to replay; it must be registered in this process.",
        )
        parser.add_argument(
            "--state",
            choices=STATE_FILTERS,
            default="failed",
            help="Which runs: failed for good (default), succeeded, or all (runs in flight "
            "are then counted and skipped).",
        )
        parser.add_argument(
            "--since",
            metavar="WHEN",
            help="Only events received at or after WHEN (the event's received_at; ISO date or "
            "date-time, UTC unless it says otherwise).",
        )
        parser.add_argument(
            "--until", metavar="WHEN", help="Only events received before WHEN (received_at)."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help=f"Count the runs that would be replayed, list {SAMPLE} of them; change nothing.",
        )
        parser.add_argument(
            "--dispatch",
            "--mode",
            dest="dispatch",
            choices=DISPATCH_MODES,
            help="Run the handler in this process or send it to Celery (default "
            "S3TASKS['DISPATCH']).",
        )
        add_log_format_argument(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        configure_command_logging(opts["verbosity"], opts["log_format"])
        name = opts["handler"]
        if name not in registry:
            known = ", ".join(sorted(h.name for h in registry)) or "none"
            raise CommandError(
                f"handler {name!r} is not registered in this process (known handlers: {known})."
            )
        since, until = parse_when(opts["since"], "--since"), parse_when(opts["until"], "--until")
        if since and until and since >= until:
            raise CommandError("--since must be before --until.")
        runs = select_runs(name, state=opts["state"], since=since, until=until)
        if opts["dry_run"]:
            self._dry_run(name, runs)
            return
        mode = opts["dispatch"] or get_settings().DISPATCH
        total = runs.count()
        self.stdout.write(f"Replaying {total} run(s) of {name} ({mode}).")
        started = time.monotonic()
        with self._progress(total) as progress:
            result = replay_runs(runs, mode=mode, by=_who(), progress=progress)
        self.stdout.write(f"{summary(result)} in {time.monotonic() - started:.1f} s.")
        if result.count("failed"):
            raise CommandError(
                f"{result.count('failed')} replay(s) failed: " + "; ".join(result.errors[:5])
            )

    def _dry_run(self, name: str, runs: QuerySet[HandlerRun]) -> None:
        by_state = dict(runs.values_list("state").annotate(n=Count("pk")).order_by())
        total = sum(by_state.values())
        states = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items())) or "none"
        self.stdout.write(f"{total} run(s) of {name} selected: {states}.")
        sample = runs.select_related("event").order_by("pk")[:SAMPLE]
        for run in sample:
            event = run.event
            self.stdout.write(
                f"  run {run.pk}  {run.state}  replays={run.replays}  "
                f"received {event.received_at.isoformat(timespec='seconds')}  "
                f"s3://{event.bucket}/{event.key}"
            )
        if total > SAMPLE:
            self.stdout.write(f"  … and {total - SAMPLE} more")
        self.stdout.write("Nothing replayed (--dry-run); runs in flight would be skipped.")

    @contextmanager
    def _progress(self, total: int) -> Iterator[Callable[[ReplayReport], None]]:
        """A rich progress bar on a terminal; otherwise a log line every few seconds."""
        bar = _rich_progress(self.stdout) if self.stdout.isatty() else None
        if bar is None:
            yield _LogProgress(total)
            return
        with bar:
            task = bar.add_task("replay", total=total, counters="")

            def update(result: ReplayReport) -> None:
                bar.update(task, completed=result.done, counters=counter_text(result))

            yield update


def summary(result: ReplayReport) -> str:
    """The final line: replayed (of which sent to Celery), skipped, failed."""
    text = f"Replayed {result.count('replayed')} run(s)"
    if result.sent:
        text += f" ({result.sent} sent to Celery)"
    text += f"; skipped {result.count('in_flight')} in flight"
    if result.count("gone"):
        text += f", {result.count('gone')} deleted meanwhile"
    if result.count("no_handler"):
        text += f", {result.count('no_handler')} without their handler here"
    return text + f"; {result.count('failed')} failed"


def counter_text(result: ReplayReport) -> str:
    return (
        f"replayed {result.count('replayed')} · skipped {result.skipped} · "
        f"failed {result.count('failed')}"
    )


def _who() -> str:
    """`replayed_by` of a command's replays: the command and the OS user running it."""
    try:
        return f"manage.py s3tasks_replay ({getpass.getuser()})"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "manage.py s3tasks_replay"


class _LogProgress:
    """Progress as a log line at most every `LOG_INTERVAL` seconds (no terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.last = time.monotonic()

    def __call__(self, result: ReplayReport) -> None:
        now = time.monotonic()
        if now - self.last >= LOG_INTERVAL:
            self.last = now
            logger.info("s3tasks replay: %d/%d, %s", result.done, self.total, counter_text(result))


def _rich_progress(out: Any) -> Any:
    """A rich `Progress` on the command's stdout, or None without rich (an optional extra)."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        return None

    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counters]}"),
    )
    return Progress(*columns, console=Console(file=TerminalOut(out)), transient=False)
