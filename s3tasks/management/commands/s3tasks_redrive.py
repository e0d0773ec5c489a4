"""`manage.py s3tasks_redrive`: move messages from a dead-letter queue back to their queue."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from s3tasks.exceptions import S3TasksError
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.management.terminal import TerminalOut
from s3tasks.ops.redrive import Progress, RedriveReport, redrive
from s3tasks.ops.redrive_queues import RedrivePlan, resolve_redrive

INTERRUPTED = (
    "Interrupted. The batch being copied may now be in both queues (harmless: s3tasks runs "
    "each event once); run the command again to move the rest. A message move task, if one "
    "was started, goes on in SQS (aws sqs cancel-message-move-task stops it)."
)
METHODS = {
    "move_task": "SQS message move task",
    "copy": "receive, send, then delete",
}


class Command(BaseCommand):
    help = (
        "Move messages from a dead-letter queue back to the queue they came from, once the "
        "cause of their failure is fixed. QUEUE is the dead-letter queue (name or URL): each "
        "message goes back to its source queue. Or QUEUE is a source queue's name: the "
        "messages of its dead-letter queue come back to it. A message is deleted from the "
        "dead-letter queue only after its copy was accepted, so an interruption can duplicate "
        "messages (s3tasks runs each handler once per event anyway) but never loses one. "
        "Exit code 1 when a message could not be moved or SQS refused a call. See "
        "docs/operations.md, 'Draining a dead-letter queue'."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "queue",
            metavar="QUEUE",
            help="The dead-letter queue's name or URL, or the name of a queue that has one.",
        )
        parser.add_argument(
            "--to",
            metavar="QUEUE",
            help="Send every message to this queue (name or URL) instead of the queue it came "
            "from; needed when a dead-letter queue serves several queues and SQS does not say "
            "which one a message came from.",
        )
        parser.add_argument(
            "--max",
            type=int,
            metavar="N",
            dest="max_messages",
            help="Take at most N messages from the dead-letter queue (default: all of them). "
            "With a limit, messages are copied one batch at a time instead of by SQS's "
            "message move task.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show how many messages the dead-letter queue holds, where they would go and "
            "a sample of them; move nothing.",
        )
        add_log_format_argument(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        configure_command_logging(opts["verbosity"], opts["log_format"])
        if opts["max_messages"] is not None and opts["max_messages"] < 1:
            raise CommandError("--max must be at least 1.")
        try:
            plan = resolve_redrive(opts["queue"], opts["to"])
            self.stdout.write(f"Dead-letter queue {plan.describe()}")
            with self._progress(opts["dry_run"]) as progress:
                report = redrive(
                    plan,
                    max_messages=opts["max_messages"],
                    dry_run=opts["dry_run"],
                    progress=progress,
                )
        except S3TasksError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            raise CommandError(INTERRUPTED) from None
        if report.method == "dry_run":
            self._show_sample(plan, report)
            return
        self._summary(report)
        if not report.ok:
            raise CommandError(self._failure(report))

    @contextmanager
    def _progress(self, dry_run: bool) -> Iterator[Progress | None]:
        """A rich progress bar on a terminal; nothing otherwise (or without rich)."""
        if dry_run or not self.stdout.isatty():
            yield None
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        except ImportError:  # rich is optional (the demo extra): the summary line is enough
            yield None
            return
        console = Console(file=TerminalOut(self.stdout))
        columns = (TextColumn("moving"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("redrive", total=None)

            def update(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=max(total or 0, done) or None)

            yield update

    def _show_sample(self, plan: RedrivePlan, report: RedriveReport) -> None:
        for message in report.sample:
            attributes = ", ".join(message.attribute_names) or "none"
            self.stdout.write(
                f"  {message.message_id}  received {message.receive_count}×  "
                f"→ {message.destination}  attributes: {attributes}\n    {message.body_excerpt}"
            )
        self.stdout.write(
            f"About {report.depth} message(s) in {plan.dead_letter_queue.name}; nothing moved "
            "(--dry-run)."
        )

    def _summary(self, report: RedriveReport) -> None:
        left = "?" if report.left is None else f"about {report.left}"
        line = (
            f"Moved {report.moved} message(s) from {report.plan.dead_letter_queue.name} "
            f"({METHODS[report.method]}); {report.failed} failed; {left} left in the "
            "dead-letter queue."
        )
        style = self.style.SUCCESS if report.ok else self.style.WARNING
        self.stdout.write(style(line))

    @staticmethod
    def _failure(report: RedriveReport) -> str:
        problems = [f"{count} × {reason}" for reason, count in report.failure_reasons.items()]
        if report.not_deleted:
            problems.append(
                f"{report.not_deleted} message(s) moved but still in the dead-letter queue "
                "(a later redrive sends them again; s3tasks runs each event once)"
            )
        problems += report.errors
        return "redrive incomplete: " + "; ".join(problems[:10])
