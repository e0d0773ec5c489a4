"""`manage.py s3tasks_cleanup`: delete history older than the retention, in short batches."""

from __future__ import annotations

import argparse
import re
import time
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_duration

from s3tasks.conf import get_settings
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.ops.cleanup import (
    DEFAULT_BATCH_SIZE,
    CleanupReport,
    cleanup_history,
    describe_age,
    retention_floor,
)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"(\d+)([smhd])")
PROGRESS_EVERY = 10.0  # seconds between progress lines


def parse_age(text: str) -> timedelta:
    """Parse "30d", "12h", "1d12h", "90m", "3600s" or ISO 8601 ("P30D"); else `ValueError`."""
    text = text.strip().lower()
    if text and DURATION.sub("", text) == "":
        return timedelta(seconds=sum(int(n) * UNITS[u] for n, u in DURATION.findall(text)))
    parsed = parse_duration(text.upper()) if text.startswith("p") else None
    if parsed is None:
        raise ValueError(
            f"{text!r} is not a duration: write a number with a unit, e.g. 30d, 12h, 90m or "
            "3600s (or ISO 8601, e.g. P30D)."
        )
    return parsed


class Command(BaseCommand):
    help = (
        "Delete s3tasks history older than S3TASKS['HISTORY_RETENTION'] (30 days by default): "
        "ended handler runs, then events with no run left, malformed-message records, and "
        "follow-up commands already sent. Runs that have not ended, their events and unsent "
        "follow-ups are kept whatever their age. Deletes in short transactions of --batch-size "
        "rows, so workers keep going; see docs/operations.md, 'Pruning history'."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            metavar="DURATION",
            help="Delete history older than this instead of S3TASKS['HISTORY_RETENTION'], "
            "e.g. 30d, 12h, 1d12h, 90m (or ISO 8601, P30D). It may not be shorter than the "
            "longest message retention of the consumed queues.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count the rows that would be deleted; delete nothing.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"Rows per DELETE and per transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        add_log_format_argument(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        configure_command_logging(opts["verbosity"], opts["log_format"])
        if opts["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        older_than = self._older_than(opts["older_than"])
        floor = retention_floor()
        if floor is not None and older_than < floor.retention:
            raise CommandError(
                f"{describe_age(older_than)} is shorter than the {describe_age(floor.retention)} "
                f"SQS keeps messages in queue {floor.queue_name!r}: a message redelivered after "
                "its event's record is deleted would run its handlers again. Keep at least "
                f"{describe_age(floor.retention)}."
            )
        verb = "Counting" if opts["dry_run"] else "Deleting"
        self.stdout.write(
            f"{verb} history older than {describe_age(older_than)}, in batches of "
            f"{opts['batch_size']}."
        )
        report = cleanup_history(
            older_than,
            batch_size=opts["batch_size"],
            dry_run=opts["dry_run"],
            on_batch=self._progress() if opts["verbosity"] >= 1 else None,
        )
        self._summary(report)
        if report.errors:
            raise CommandError("cleanup stopped: " + "; ".join(report.errors))

    def _older_than(self, text: str | None) -> timedelta:
        if text is not None:
            try:
                age = parse_age(text)
            except ValueError as exc:
                raise CommandError(f"--older-than: {exc}") from exc
            if age <= timedelta(0):
                raise CommandError("--older-than must be longer than 0.")
            return age
        retention = get_settings().HISTORY_RETENTION
        if retention is None:
            raise CommandError(
                "S3TASKS['HISTORY_RETENTION'] is None (keep history forever); pass "
                "--older-than DURATION to delete older history anyway."
            )
        return retention

    def _progress(self) -> Any:
        last = [time.monotonic()]

        def progress(report: CleanupReport) -> None:
            if time.monotonic() - last[0] >= PROGRESS_EVERY:
                last[0] = time.monotonic()
                self.stdout.write(f"  … {report.total} row(s) deleted so far")

        return progress

    def _summary(self, report: CleanupReport) -> None:
        cutoff = report.cutoff.isoformat(timespec="seconds")
        heading = "would delete" if report.dry_run else "deleted"
        self.stdout.write(f"\n  {'table':<16}{heading:>14}")
        for table, count in report.counts.items():
            self.stdout.write(f"  {table:<16}{count:>14}")
        self.stdout.write(f"  {'total':<16}{report.total:>14}")
        if report.dry_run:
            self.stdout.write(f"\nRows older than {cutoff}; nothing deleted (--dry-run).")
            return
        self.stdout.write(
            f"\nRows older than {cutoff}: {report.batches} batch(es) in {report.seconds:.1f}s, "
            f"the longest {report.longest_batch * 1000:.0f} ms."
        )
        if report.busy:
            self.stderr.write(
                self.style.WARNING(
                    "Stopped early: another process (a worker's cleanup timer?) holds the "
                    "cleanup lock. Run again later to delete the rest."
                )
            )
