"""`manage.py sqs_worker`: consume S3 event messages from SQS and run their handlers."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from s3tasks.checks import rules_database
from s3tasks.conf import DISPATCH_MODES
from s3tasks.exceptions import S3TasksConfigurationError
from s3tasks.logs import add_log_format_argument, configure_command_logging
from s3tasks.ops.metrics.prometheus import DEFAULT_ADDR, import_prometheus
from s3tasks.rules.code_bindings import add_missing_code_bindings
from s3tasks.worker import Consumer, QueueSelectionError, WorkerOptions, build_consumer
from s3tasks.worker.metrics import RunningMetrics, start_worker_metrics

DEFAULT_METRICS_POLL = 15.0


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
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve Prometheus metrics on http://ADDR:PORT/metrics (0: any free port, "
            "logged). Needs pip install 's3tasks[metrics]'; see docs/metrics.md.",
        )
        parser.add_argument(
            "--metrics-addr",
            default=DEFAULT_ADDR,
            metavar="ADDR",
            help=f"Address the metrics server listens on (default {DEFAULT_ADDR}: every "
            "interface, so a scraper on another host reaches it; 127.0.0.1 keeps it local).",
        )
        parser.add_argument(
            "--metrics-poll",
            type=float,
            default=DEFAULT_METRICS_POLL,
            metavar="SECONDS",
            help="Seconds between GetQueueAttributes polls of each queue's and dead-letter "
            f"queue's depth for the metrics (default {DEFAULT_METRICS_POLL:g}).",
        )
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
        check_metrics_flags(opts)
        # Only add: during a rolling deploy the database may hold a newer release's rules
        # (docs/worker.md, "Rolling deploys"); migrate/s3tasks_bindings reconcile fully.
        add_missing_code_bindings()
        try:
            consumer = build_consumer(client("sqs"), opts["queue"], options)
        except (QueueSelectionError, S3TasksConfigurationError) as exc:  # e.g. no credentials
            raise CommandError(str(exc))
        metrics = serve_metrics(consumer, opts)
        try:
            final = consumer.run(install_signal_handlers=True)
        finally:
            if metrics is not None:
                metrics.close()
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


def check_metrics_flags(opts: dict[str, Any]) -> None:
    """Refuse wrong metrics flags, or a port without prometheus_client, before any work."""
    port = opts["metrics_port"]
    if port is None:
        return
    if not 0 <= port <= 65535:
        raise CommandError(f"--metrics-port must be 0..65535, not {port}")
    if not opts["metrics_poll"] > 0:
        raise CommandError("--metrics-poll must be more than 0 seconds")
    try:
        import_prometheus()
    except ImportError as exc:
        raise CommandError(f"--metrics-port: {exc}")


def serve_metrics(consumer: Consumer, opts: dict[str, Any]) -> RunningMetrics | None:
    """Start the metrics server and queue poller when `--metrics-port` asks for them."""
    if opts["metrics_port"] is None:
        return None
    try:
        return start_worker_metrics(
            consumer, opts["metrics_port"], opts["metrics_addr"], opts["metrics_poll"]
        )
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on {opts['metrics_addr']}:{opts['metrics_port']}: {exc}"
        )
