"""`manage.py s3tasks_recover`: drive runs that were handed off and never finished."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from s3tasks.conf import DISPATCH_MODES
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.ops.recovery import recover_stuck_runs


class Command(BaseCommand):
    help = (
        "Find handler runs past their lease (handed to Celery and not finished within "
        "S3TASKS['RUN_LEASE'] seconds: a lost task, a crashed worker) and drive each again, "
        "exactly once. Every sqs_worker does this on a timer; see docs/operations.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            metavar="SECONDS",
            help="Treat runs handed off at least this many seconds ago as stuck, instead of "
            "waiting for their lease (S3TASKS['RUN_LEASE']) to run out. 0 takes every "
            "unfinished handed-off run.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="List the stuck runs; change nothing."
        )
        parser.add_argument(
            "--limit", type=int, default=1000, help="Most runs to look at (default 1000)."
        )
        parser.add_argument(
            "--dispatch",
            choices=DISPATCH_MODES,
            help="Re-send to Celery or run inline in this process (default S3TASKS['DISPATCH']).",
        )
        add_log_format_argument(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        configure_command_logging(opts["verbosity"], opts["log_format"])
        if opts["older_than"] is not None and opts["older_than"] < 0:
            raise CommandError("--older-than must be 0 or more seconds.")
        if opts["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        report = recover_stuck_runs(
            older_than=opts["older_than"],
            limit=opts["limit"],
            dry_run=opts["dry_run"],
            mode=opts["dispatch"],
        )
        for run in report.found:
            lease = run.lease_expires_at.isoformat() if run.lease_expires_at else "none"
            self.stdout.write(
                f"  run {run.run_id}  {run.handler_name}  {run.state}  attempts={run.attempts}  "
                f"lease={lease}  s3://{run.bucket}/{run.key}"
            )
        if opts["dry_run"]:
            self.stdout.write(f"{len(report.found)} stuck run(s); nothing changed (--dry-run).")
            return
        self.stdout.write(
            f"{len(report.found)} stuck run(s): {report.count('resent')} re-sent to Celery, "
            f"{report.count('ran')} run inline, {report.count('left_alone')} left alone "
            f"(finished meanwhile or running), {report.count('no_handler')} need a handler "
            f"this process lacks, {report.count('error')} error(s)."
        )
        if report.errors:
            raise CommandError("could not recover: " + "; ".join(report.errors[:10]))
