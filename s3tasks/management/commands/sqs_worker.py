"""`manage.py sqs_worker`: consume S3 event messages from SQS and run their handlers."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from s3tasks.checks import rules_database
from s3tasks.conf import DISPATCH_MODES
from s3tasks.exceptions import S3TasksConfigurationError
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.rules.code_bindings import add_missing_code_bindings
from s3tasks.worker import QueueSelectionError, WorkerOptions, build_consumer


class Command(BaseCommand):
    help = (
        "Consume S3 event notifications from SQS (directly or via SNS) and run the matching "
        "handlers. Defaults come from S3TASKS['WORKER']; see docs/worker.md."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME_OR_URL",
            help="Queue to consume (repeatable). Default: every enabled Queue in the database. "
            "Each queue gets its own long-polling receiver sharing one worker pool.",
        )
        parser.add_argument(
            "--concurrency", type=int, help="Worker threads = messages handled at once."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            help="Most messages per receive, 1..10 (never more than free worker threads).",
        )
        parser.add_argument("--wait-time", type=int, help="Long-poll seconds per receive, 0..20.")
        parser.add_argument(
            "--visibility-timeout",
            type=int,
            help="Seconds a received message stays hidden; extended while a handler runs.",
        )
        parser.add_argument(
            "--max-backoff",
            type=int,
            help="Cap in seconds of the retry delay of a failed message (exponential by "
            "receive count, starting at S3TASKS['RETRY_BACKOFF']).",
        )
        parser.add_argument(
            "--max-messages", type=int, help="Exit after receiving and finishing this many."
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="Do one receive per queue, finish those messages, then exit.",
        )
        parser.add_argument(
            "--exit-when-idle",
            type=float,
            metavar="SECONDS",
            help="Exit once nothing was received or in flight for this many seconds.",
        )
        parser.add_argument(
            "--dispatch",
            choices=DISPATCH_MODES,
            help="Run handlers on Celery or inline in this process (default S3TASKS['DISPATCH']).",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            help="On SIGTERM/SIGINT, seconds to let in-flight messages finish (no receive "
            "starts after the signal; a second signal exits at once). Messages still in flight "
            "then are released for redelivery and the command exits with status 3.",
        )
        parser.add_argument(
            "--heartbeat-file",
            help="File touched every loop iteration (at least every wait time); for liveness "
            "probes.",
        )
        parser.add_argument("--stats-interval", type=float, help="Seconds between stats log lines.")
        add_log_format_argument(parser)

    def get_check_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        # Opt into the checks that read the rules (as `migrate` does): a binding to a handler
        # this release lacks (W004) is printed when the worker starts.
        return {**super().get_check_kwargs(options), "databases": [rules_database()]}

    def handle(self, *args: Any, **opts: Any) -> None:
        from s3tasks.aws import client

        configure_command_logging(opts["verbosity"], opts["log_format"])
        try:
            options = WorkerOptions.from_settings(
                concurrency=opts["concurrency"],
                batch_size=opts["batch_size"],
                wait_time=opts["wait_time"],
                visibility_timeout=opts["visibility_timeout"],
                max_backoff=opts["max_backoff"],
                max_messages=opts["max_messages"],
                once=opts["once"] or None,
                exit_when_idle=opts["exit_when_idle"],
                dispatch=opts["dispatch"],
                shutdown_timeout=opts["shutdown_timeout"],
                heartbeat_file=opts["heartbeat_file"],
                stats_interval=opts["stats_interval"],
            )
        except ValueError as exc:
            raise CommandError(str(exc))
        # Only add: during a rolling deploy the database may hold a newer release's rules
        # (docs/worker.md, "Rolling deploys"); migrate/s3tasks_bindings reconcile fully.
        add_missing_code_bindings()
        try:
            consumer = build_consumer(client("sqs"), opts["queue"], options)
        except (QueueSelectionError, S3TasksConfigurationError) as exc:  # e.g. no credentials
            raise CommandError(str(exc))
        final = consumer.run(install_signal_handlers=True)
        self.stdout.write(
            f"sqs_worker: received {final.received}, handled {final.handled}, "
            f"failed {final.failed}, failed permanently {final.failed_permanently}, "
            f"deferred {final.deferred}, unavailable {final.unavailable}, "
            f"malformed {final.malformed}, deleted {final.deleted}, "
            f"released {final.released}, events {final.events} in {final.elapsed:.2f}s"
        )
        if final.abandoned:
            raise CommandError(
                f"shutdown abandoned {final.abandoned} in-flight message(s) after the "
                f"{options.shutdown_timeout:.0f}s shutdown timeout; they were released for "
                "redelivery (raise --shutdown-timeout to let long handlers finish)",
                returncode=3,
            )
