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
from enum import StrEnum, nonmember
from typing import Any

from s3tasks.conf import get_settings
from s3tasks.envelopes import parse_message
from s3tasks.events import S3Event
from s3tasks.exceptions import MalformedMessage
from s3tasks.outages import describe, is_unavailable
from s3tasks.processing.dispatch import BatchItem, DispatchOutcome, dispatch_batch
from s3tasks.rules.routing import route

logger = logging.getLogger(__name__)


class Status(StrEnum):
    """What happened to a message (the values are stable: logs and metrics use them)."""

    HANDLED = "handled"  # every event handled or durably handed off: delete the message
    TEST_EVENT = "test_event"  # s3:TestEvent: acknowledge, run nothing
    FAILED = "failed"  # some handler failed and will retry: leave it for redelivery / DLQ
    # every failure is for good (PermanentFailure, retries used up): the run history keeps the
    # event and its error (the admin can retry it), so the message is deleted
    FAILED_PERMANENTLY = "failed_permanently"
    # a routed handler is not registered in this process (rolling deploy): release it soon
    DEFERRED = "deferred"
    # the database or broker could not be reached: release it, nothing counts as a failure
    UNAVAILABLE = "unavailable"
    MALFORMED = "malformed"  # not an envelope we know: leave it to reach the DLQ

    # the statuses whose message is deleted (not a member)
    DELETABLE = nonmember(frozenset({HANDLED, TEST_EVENT, FAILED_PERMANENTLY}))


@dataclass(frozen=True)
class InboundMessage:
    """One message as the core needs it, whatever delivered it."""

    message_id: str
    body: str | dict[str, Any]
    receive_count: int = 1
    queue_name: str = ""
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)
    # Why the delivery itself is unusable (a Lambda SQS record without a body): malformed as is.
    problem: str = ""


@dataclass(frozen=True)
class MessageOutcome:
    message_id: str
    status: Status
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
    """The message's events, or its final outcome if it has none to run.

    Only this message is malformed when it cannot be parsed, whatever the reason: even a bug
    in a parser must not fail the other messages of the batch.
    """
    try:
        if message.problem:
            raise MalformedMessage(message.problem)
        parsed = parse_message(message.body)
    except MalformedMessage as exc:
        return _malformed(message, str(exc))
    except Exception as exc:  # parse_message raises only MalformedMessage; this is a bug
        logger.exception("s3tasks: parsing message %s failed unexpectedly", message.message_id)
        return _malformed(message, f"could not be parsed ({type(exc).__name__}: {exc})"[:2000])
    if parsed.is_test_event:
        logger.info(
            "s3tasks: s3:TestEvent in message %s acknowledged",
            message.message_id,
            extra=_message_fields(message, Status.TEST_EVENT),
        )
        return MessageOutcome(message.message_id, Status.TEST_EVENT)
    return parsed.events


def _malformed(message: InboundMessage, reason: str) -> MessageOutcome:
    logger.error(
        "s3tasks: malformed message %s from %s (receive #%d), left for the DLQ: %s",
        message.message_id,
        message.queue_name or "?",
        message.receive_count,
        reason,
        extra=_message_fields(message, Status.MALFORMED),
    )
    return MessageOutcome(message.message_id, Status.MALFORMED, error=reason)


def _message_fields(message: InboundMessage, status: Status) -> dict[str, Any]:
    """The `extra=` of a log line about a whole message (JSON logs show these fields)."""
    return {
        "message_id": message.message_id,
        "queue": message.queue_name,
        "receive_count": message.receive_count,
        "outcome": str(status),
    }


Todo = Sequence[tuple[int, InboundMessage, tuple[S3Event, ...]]]


def _dispatch_messages(todo: Todo, mode: str) -> dict[int, MessageOutcome]:
    """Dispatch the events of `todo` together; on a failure of the whole, one by one.

    An unreachable database or broker fails every message as `UNAVAILABLE` at once (one log
    line, no traceback): trying them one by one would only fail again.
    """
    try:
        return _dispatch_together(todo, mode)
    except Exception as exc:  # a broken database or broker must not kill the loop
        if is_unavailable(exc):
            logger.warning("s3tasks: %d message(s) left for later: %s", len(todo), describe(exc))
            error = f"unavailable: {describe(exc)}"
            return {
                index: MessageOutcome(message.message_id, Status.UNAVAILABLE, len(events), 0, error)
                for index, message, events in todo
            }
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

    items = [
        BatchItem(
            event,
            route(event),
            message.message_id,
            message.queue_name,
            redelivered=message.receive_count > 1,
        )
        for _, message, events in todo
        for event in events
    ]
    dispatched = iter(dispatch_batch(items, mode=mode))
    results = {}
    for index, message, events in todo:
        outcomes = [next(dispatched) for _ in events]
        errors = [f"{e.key}: {o.error}" for e, o in zip(events, outcomes, strict=True) if not o.ok]
        results[index] = MessageOutcome(
            message.message_id,
            message_status(outcomes),
            len(events),
            sum(len(o.runs) for o in outcomes),
            error="; ".join(errors),
        )
    return results


def message_status(outcomes: Sequence[DispatchOutcome]) -> Status:
    """The status of a message from its events' outcomes: the failure that most needs the
    message kept wins (unreachable service, then a retry, then a handler elsewhere)."""
    if all(o.ok for o in outcomes):
        return Status.HANDLED
    if any(o.unavailable for o in outcomes):
        return Status.UNAVAILABLE
    if any(o.retryable for o in outcomes):
        return Status.FAILED
    if any(o.deferred for o in outcomes):
        return Status.DEFERRED
    return Status.FAILED_PERMANENTLY
