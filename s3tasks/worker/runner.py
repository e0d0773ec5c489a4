"""Wiring for `sqs_worker`: pick the queues, build the consumer, record malformed messages.

Kept apart from the loop so the loop stays free of models and settings lookups, and apart
from the management command so scripts and tests can run a worker without `call_command`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from django.db import close_old_connections, router

from s3tasks.conf import get_settings
from s3tasks.exceptions import QueueSelectionError
from s3tasks.followups.outbox import relay_outbox
from s3tasks.models import HandlerRun, Queue
from s3tasks.ops.cleanup import cleanup_history, retention_floor
from s3tasks.ops.recovery import recover_stuck_runs
from s3tasks.outages import probe_broker, probe_database
from s3tasks.processing.message_failures import record_message_failure
from s3tasks.processing.messages import MessageOutcome
from s3tasks.worker.loop import Consumer
from s3tasks.worker.options import WorkerOptions
from s3tasks.worker.presence import WorkerPresence
from s3tasks.worker.sqs import QueueRef, ReceivedMessage, SqsQueueClient

logger = logging.getLogger("s3tasks.worker")
CLEANUP_PASS_SECONDS = 300.0  # the longest one cleanup timer pass works


def configured_queue_names() -> list[str]:
    """Every enabled `Queue` row: its URL when sync filled it in, else its name."""

    return [q.url or q.name for q in Queue.objects.filter(enabled=True).order_by("name")]


def resolve_queues(sqs: SqsQueueClient, names_or_urls: Sequence[str]) -> list[QueueRef]:
    """Resolve `--queue` values (or the enabled `Queue` rows) to `QueueRef`s."""
    wanted = list(dict.fromkeys(names_or_urls)) or configured_queue_names()
    if not wanted:
        raise QueueSelectionError(
            "No queue to consume: there is no enabled Queue in the database. Run "
            "`manage.py sync_notifications` (or add one in the admin), or pass --queue NAME_OR_URL."
        )
    resolved = []
    for name in wanted:
        try:
            resolved.append(sqs.resolve(name))
        except Exception as exc:
            raise QueueSelectionError(
                f"Cannot find SQS queue {name!r} ({exc}). Create it with "
                "`manage.py sync_notifications`, or check --queue, S3TASKS['REGION'] and "
                "S3TASKS['ENDPOINT_URL']."
            ) from exc
    for ref in resolved:
        if ref.max_receive_count is None:
            logger.warning(
                "s3tasks worker: queue %s has no dead-letter queue (RedrivePolicy); a message "
                "that always fails is retried until it expires",
                ref.name,
            )
    return resolved


def record_malformed(message: ReceivedMessage, outcome: MessageOutcome) -> None:
    """Keep a row about a malformed message (`s3tasks.processing.message_failures`, as Lambda does).

    Raises if the row cannot be written; the loop then keeps the message as failed.
    """
    record_message_failure(
        queue_name=message.queue.name,
        message_id=message.message_id,
        receive_count=message.receive_count,
        reason=outcome.error,
        body=message.body,
    )


def outbox_relay() -> Callable[[], None]:
    """A callable sending follow-up commands left over (e.g. after a crash)."""

    def relay() -> None:
        close_old_connections()
        try:
            sent = relay_outbox()
            if sent:
                logger.info("s3tasks worker: relayed %d follow-up command(s)", sent)
        finally:
            close_old_connections()

    return relay


def connection_hints() -> list[str]:
    """A hint per database whose `CONN_MAX_AGE=0` makes every message open a new connection.

    The worker calls `close_old_connections()` around each message, which honours
    `CONN_MAX_AGE` exactly as a request would: with 0 (Django's default) that is a reconnect
    per message — a new PostgreSQL backend each time, ~30-50% of the worker's throughput.
    """
    from django.db import connections

    return [
        f"DATABASES[{alias!r}]['CONN_MAX_AGE'] is 0, so each message opens a new database "
        "connection; set it to e.g. 60 for workers (docs/worker.md)"
        for alias in connections
        if connections[alias].settings_dict.get("CONN_MAX_AGE", 0) == 0
    ]


def build_consumer(
    client: Any, names_or_urls: Sequence[str], options: WorkerOptions, **kwargs: Any
) -> Consumer:
    """A `Consumer` on the given (or configured) queues with malformed-message recording."""
    sqs = SqsQueueClient(client)
    queues = resolve_queues(sqs, names_or_urls)
    # Settled once, so the start line names the mode every batch of this process uses.
    options = replace(options, dispatch=options.dispatch or get_settings().DISPATCH)
    kwargs.setdefault("record_malformed", record_malformed)
    kwargs.setdefault("relay", outbox_relay())
    kwargs.setdefault("recover", recovery_pass(options.dispatch))
    kwargs.setdefault("cleanup", cleanup_pass())
    kwargs.setdefault(
        "presence",
        WorkerPresence([q.name for q in queues], options.dispatch or "", options.concurrency),
    )
    kwargs.setdefault("probe", service_probe(options.dispatch))
    kwargs.setdefault("hints", connection_hints())
    return Consumer(sqs, queues, options, **kwargs)


def recovery_pass(dispatch: str | None) -> Callable[[], None]:
    """The worker's timer body: drive runs stuck past their lease (`s3tasks.ops.recovery`)."""

    def recover() -> None:
        close_old_connections()
        try:
            recover_stuck_runs(mode=dispatch)
        finally:
            close_old_connections()

    return recover


def cleanup_pass() -> Callable[[], None]:
    """The cleanup timer's body: one pass of `s3tasks.ops.cleanup`, at most
    `CLEANUP_PASS_SECONDS` long (the next pass goes on), while HISTORY_RETENTION is set."""

    def clean() -> None:
        retention = get_settings().HISTORY_RETENTION
        if retention is None:
            return
        close_old_connections()
        try:
            floor = retention_floor()
            if floor is not None and retention < floor.retention:
                logger.error(
                    "s3tasks worker: not cleaning up: HISTORY_RETENTION is shorter than queue "
                    "%s's message retention (system check s3tasks.E006)",
                    floor.queue_name,
                )
                return
            cleanup_history(retention, max_seconds=CLEANUP_PASS_SECONDS)
        finally:
            close_old_connections()

    return clean


def service_probe(dispatch: str | None) -> Callable[[], str | None]:
    """What the worker asks during an outage: the database, and the broker in Celery mode."""
    celery = (dispatch or get_settings().DISPATCH) == "celery"

    def probe() -> str | None:
        return probe_database(router.db_for_write(HandlerRun)) or (
            probe_broker() if celery else None
        )

    return probe
