"""The batch-processing core shared by `sqs_worker` and the Lambda entrypoint.

Messages in → parse each → route every event → dispatch all of them with ONE `dispatch_batch`
→ one `MessageOutcome` per message out. The caller (worker or Lambda) decides what an outcome
means for SQS: delete, leave for redelivery, or report in `batchItemFailures`. Nothing here
talks to SQS. A malformed message or a failing handler fails only its own message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from s3tasks.conf import get_settings
from s3tasks.envelopes import parse_message
from s3tasks.events import S3Event
from s3tasks.exceptions import MalformedMessage

logger = logging.getLogger(__name__)


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
    [outcome] = process_messages([message], dispatch_mode=dispatch_mode)
    return outcome


def process_messages(
    messages: Iterable[InboundMessage], *, dispatch_mode: str | None = None
) -> list[MessageOutcome]:
    """Handle a received batch: one outcome per message, in order; never raises.

    The events of all messages are dispatched together (inline: one transaction, a few
    statements per batch). If that fails as a whole (a database error), each message is
    retried alone, so one message the database rejects fails only itself.
    """
    mode = dispatch_mode or get_settings().DISPATCH
    outcomes: dict[int, MessageOutcome] = {}
    todo: list[tuple[int, InboundMessage, tuple[S3Event, ...]]] = []
    for index, message in enumerate(messages):
        parsed = _parse(message)
        if isinstance(parsed, MessageOutcome):
            outcomes[index] = parsed
        else:
            todo.append((index, message, parsed))
    if todo:
        outcomes.update(_dispatch_messages(todo, mode))
    return [outcomes[i] for i in sorted(outcomes)]


def _parse(message: InboundMessage) -> MessageOutcome | tuple[S3Event, ...]:
    """The message's events, or its final outcome if it has none to run."""
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
    return parsed.events


Todo = Sequence[tuple[int, InboundMessage, tuple[S3Event, ...]]]


def _dispatch_messages(todo: Todo, mode: str) -> dict[int, MessageOutcome]:
    """Dispatch the events of `todo` together; on a failure of the whole, one by one."""
    try:
        return _dispatch_together(todo, mode)
    except Exception as exc:  # a broken database or broker must not kill the loop
        if len(todo) == 1:
            index, message, events = todo[0]
            logger.exception("s3tasks: could not dispatch message %s", message.message_id)
            error = f"dispatch failed: {type(exc).__name__}: {exc}"
            return {index: MessageOutcome(message.message_id, Status.FAILED, len(events), 0, error)}
        logger.warning(
            "s3tasks: dispatching %d messages together failed (%s: %s); one by one now",
            len(todo),
            type(exc).__name__,
            exc,
        )
    results: dict[int, MessageOutcome] = {}
    for entry in todo:
        results.update(_dispatch_messages([entry], mode))
    return results


def _dispatch_together(todo: Todo, mode: str) -> dict[int, MessageOutcome]:
    from s3tasks.dispatch import BatchItem, dispatch_batch
    from s3tasks.routing import route

    items = [
        BatchItem(event, route(event), message.message_id, message.queue_name)
        for _, message, events in todo
        for event in events
    ]
    dispatched = iter(dispatch_batch(items, mode=mode))
    results = {}
    for index, message, events in todo:
        runs = 0
        errors = []
        for event in events:
            outcome = next(dispatched)
            runs += len(outcome.runs)
            if not outcome.ok:
                errors.append(f"{event.key}: {outcome.error}")
        status = Status.FAILED if errors else Status.HANDLED
        results[index] = MessageOutcome(
            message.message_id, status, len(events), runs, error="; ".join(errors)
        )
    return results
