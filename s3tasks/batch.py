"""The batch-processing core shared by `sqs_worker` and the Lambda entrypoint.

One message in → parse → route every event → dispatch → one `MessageOutcome` out. The caller
(worker or Lambda) decides what an outcome means for SQS: delete, leave for redelivery, or
report in `batchItemFailures`. Nothing here talks to SQS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from s3tasks.conf import get_settings
from s3tasks.envelopes import parse_message
from s3tasks.events import S3Event
from s3tasks.exceptions import MalformedMessage

logger = logging.getLogger(__name__)

INLINE = "inline"


class Status:
    """What happened to a message (string constants; stable for logs and metrics)."""

    HANDLED = "handled"  # every event handled or durably handed off: delete the message
    TEST_EVENT = "test_event"  # s3:TestEvent: acknowledge, run nothing
    FAILED = "failed"  # some handler failed: leave it for redelivery / DLQ
    MALFORMED = "malformed"  # not an envelope we know: leave it to reach the DLQ

    DELETABLE = frozenset({HANDLED, TEST_EVENT})


@dataclass(frozen=True)
class InboundMessage:
    """One message as the core needs it, whatever delivered it."""

    message_id: str
    body: str | dict[str, Any]
    receive_count: int = 1
    queue_name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class MessageOutcome:
    message_id: str
    status: str
    events: int = 0
    runs: int = 0
    error: str = ""

    @property
    def deletable(self) -> bool:
        return self.status in Status.DELETABLE


def process_message(message: InboundMessage, *, dispatch_mode: str | None = None) -> MessageOutcome:
    """Handle every event in one message; never raises for a bad message or a failing handler."""
    try:
        parsed = parse_message(message.body)
    except MalformedMessage as exc:
        logger.error(
            "s3tasks: malformed message %s from %s (receive #%d), left for the DLQ: %s",
            message.message_id,
            message.queue_name or "?",
            message.receive_count,
            exc,
        )
        return MessageOutcome(message.message_id, Status.MALFORMED, error=str(exc))
    if parsed.is_test_event:
        logger.info("s3tasks: s3:TestEvent in message %s acknowledged", message.message_id)
        return MessageOutcome(message.message_id, Status.TEST_EVENT)
    mode = dispatch_mode or get_settings().DISPATCH
    try:
        with _message_transaction(mode):
            runs, errors = _dispatch_all(parsed.events, message, mode)
    except Exception as exc:  # the commit itself failed: nothing of this message was kept
        logger.exception("s3tasks: could not commit message %s", message.message_id)
        runs, errors = 0, [f"commit failed: {type(exc).__name__}: {exc}"]
    status = Status.FAILED if errors else Status.HANDLED
    return MessageOutcome(
        message.message_id, status, events=len(parsed.events), runs=runs, error="; ".join(errors)
    )


def _message_transaction(mode: str) -> AbstractContextManager[Any]:
    """Inline: one transaction per message, so its events cost one commit (one fsync), not
    three each. A crash rolls the whole message back and its redelivery runs it cleanly.
    Celery: no outer transaction, so a task is sent (and the message deleted) only once the
    broker has it, never on a commit hook that might fail after the outcome was reported."""
    return transaction.atomic() if mode == INLINE else nullcontext()


def _dispatch_all(
    events: Iterable[S3Event], message: InboundMessage, mode: str
) -> tuple[int, list[str]]:
    from s3tasks.dispatch import dispatch_event
    from s3tasks.routing import route

    runs = 0
    errors: list[str] = []
    for event in events:
        try:
            outcome = dispatch_event(
                event,
                routes=route(event),
                mode=mode,
                message_id=message.message_id,
                queue_name=message.queue_name,
            )
        except Exception as exc:  # a broken database or broker must not kill the loop
            logger.exception("s3tasks: could not dispatch %s", event.key)
            errors.append(f"{event.key}: {exc}")
            if mode == INLINE:
                # The message's transaction may be unusable now: roll all of it back and stop;
                # the message fails as a whole and its redelivery starts clean.
                transaction.set_rollback(True)
                break
            continue
        runs += len(outcome.runs)
        if not outcome.ok:
            errors.append(f"{event.key}: {outcome.error}")
    return runs, errors


def process_messages(
    messages: Iterable[InboundMessage], *, dispatch_mode: str | None = None
) -> list[MessageOutcome]:
    """Process messages one after the other (the worker parallelises with its own pool)."""
    return [process_message(m, dispatch_mode=dispatch_mode) for m in messages]
