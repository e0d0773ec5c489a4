"""`manage.py s3tasks_relay`: send follow-up commands left in the outbox (after a crash, or
when no `sqs_worker` runs the relay)."""

from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections

from s3tasks.followups.outbox import relay_outbox
from s3tasks.logs import add_log_format_argument, configure_command_logging


class Command(BaseCommand):
    help = (
        "Send due, unsent follow-up commands (Celery tasks, SQS/SNS messages) from the s3tasks "
        "outbox. Runs until interrupted unless --once is given; safe to run several at once."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Send what is due now, then exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=2.0,
            help="Seconds to wait between passes when nothing is left to send (default 2).",
        )
        parser.add_argument(
            "--limit", type=int, default=100, help="Most entries to send per pass (default 100)."
        )
        add_log_format_argument(parser)

    def handle(self, *args: Any, once: bool, interval: float, limit: int, **options: Any) -> None:
        configure_command_logging(options["verbosity"], options["log_format"])
        if interval <= 0 or limit < 1:
            raise CommandError("--interval must be > 0 and --limit at least 1.")
        if once:
            self.stdout.write(f"Sent {self._pass(limit, fatal=True)} outbox entries.")
            return
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"Relaying the s3tasks outbox every {interval:g}s (Ctrl-C to stop).")
        while not stopping:
            sent = self._pass(limit, fatal=False)
            if sent:
                self.stdout.write(f"Sent {sent} outbox entries.")
            if sent < limit:  # a full pass means more may be waiting: go again at once
                deadline = time.monotonic() + interval
                while not stopping and time.monotonic() < deadline:
                    time.sleep(min(0.2, interval))
        self.stdout.write("Stopped.")

    def _pass(self, limit: int, *, fatal: bool) -> int:
        if not fatal:  # long-running: drop broken/expired connections around each pass
            close_old_connections()
        try:
            return relay_outbox(limit)
        except DatabaseError as exc:
            if fatal:
                raise CommandError(f"Could not read the outbox: {exc}. Is the database migrated?")
            self.stderr.write(f"Could not read the outbox (will retry): {exc}")
            return 0
        finally:
            if not fatal:
                close_old_connections()
