"""`deliver()`: run events through s3tasks' routing and exactly-once dispatch, synchronously,
and say what happened (which handlers ran, their results and errors, their follow-ups).

It is what the worker does with one message, in the test's process and transaction: parse
the body (any envelope), route every event, then one `dispatch_batch` for all of them (the
same call, so the same exactly-once bookkeeping, as `s3tasks.processing.messages`). It
differs in three ways that suit tests: errors of s3tasks itself (a database error, a body
that is not an envelope) are raised instead of leaving the message for redelivery; the rules
are reloaded first, so rules a test created are routed to at once; and on-commit callbacks
registered by the delivery run at its end, as the worker's commit would run them, even
inside a test case's transaction that never commits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import router as db_router
from django.test import TestCase

from s3tasks import signals
from s3tasks.envelopes import parse_message
from s3tasks.envelopes.fields import Payload
from s3tasks.events import S3Event
from s3tasks.followups.commands import FollowUpCommand
from s3tasks.models import HandlerRun, RunState
from s3tasks.processing.dispatch import (
    CELERY,
    INLINE,
    BatchItem,
    DispatchOutcome,
    RunOutcome,
    dispatch_batch,
)
from s3tasks.processing.messages import Status, message_status
from s3tasks.rules.routing import route, router
from s3tasks.testing.followups import captured_followups


@dataclass(frozen=True)
class DeliveredRun:
    """One handler routed to for one event, and what this delivery did with it.

    `ran`: the handler was called during the delivery (inline, or by an eager Celery task).
    `skipped`: the run had already ended or been handed off (a duplicate delivery).
    `deferred`: the handler is not registered in this process. `state`, `attempts`,
    `error` and `result_summary` are the run row's after the delivery. `result` and
    `exception` are what the handler returned or raised, in inline mode.
    """

    handler_name: str
    event: S3Event
    run_id: int | None
    state: str
    ran: bool = False
    skipped: bool = False
    deferred: bool = False
    attempts: int = 0
    error: str = ""
    result_summary: str = ""
    result: Any = field(default=None, compare=False)
    exception: BaseException | None = field(default=None, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.state == RunState.SUCCEEDED


@dataclass(frozen=True)
class Delivery:
    """What `deliver()` did with one message (or events).

    `status` is what the worker would do with the message (`s3tasks.processing.messages.Status`:
    `handled`, `failed`, `test_event`, ...). `followups` are the commands the handlers issued
    that survived their transactions (a failed handler's are rolled back), in order.
    """

    events: tuple[S3Event, ...]
    runs: tuple[DeliveredRun, ...]
    followups: tuple[FollowUpCommand, ...]
    status: str
    is_test_event: bool = False

    @property
    def handlers_run(self) -> list[str]:
        """Names of the handlers called by this delivery, in the order they ran."""
        return [run.handler_name for run in self.runs if run.ran]

    @property
    def errors(self) -> dict[str, str]:
        """Handler name -> error, for every run that did not end well (or could not run)."""
        return {run.handler_name: run.error for run in self.runs if run.error}

    @property
    def ok(self) -> bool:
        """Whether the worker would delete the message as handled (no handler failed)."""
        return self.status in (Status.HANDLED, Status.TEST_EVENT)

    def run_of(self, handler_name: str) -> DeliveredRun:
        """The one run of `handler_name` (a LookupError if it was routed to none or several)."""
        found = [run for run in self.runs if run.handler_name == handler_name]
        if len(found) != 1:
            routed = ", ".join(sorted({run.handler_name for run in self.runs})) or "none"
            raise LookupError(
                f"{handler_name!r} has {len(found)} run(s) in this delivery, not 1; "
                f"handlers routed to: {routed}"
            )
        return found[0]


def deliver(
    event_or_body: S3Event | Iterable[S3Event] | Payload,
    *,
    dispatch: str = INLINE,
    send_followups: bool = False,
    message_id: str = "",
    queue_name: str = "",
) -> Delivery:
    """Deliver events as the worker would: route them, dispatch every handler exactly once.

    `event_or_body` is an `S3Event`, several, or a message body of any envelope s3tasks reads
    (a dict or JSON text, e.g. `s3_notification(...)`, `sns_envelope(...)`, a Lambda event).
    `dispatch` is `"inline"` (run the handlers here) or `"celery"` (send each handler's task:
    with `CELERY_TASK_ALWAYS_EAGER` it runs here too). Follow-up commands are captured and
    not sent unless `send_followups`. Delivering the same event again runs nothing new.
    """
    if dispatch not in (INLINE, CELERY):
        raise ValueError(f"dispatch must be {INLINE!r} or {CELERY!r}, not {dispatch!r}.")
    events, is_test_event = _events_of(event_or_body)
    if is_test_event:
        return Delivery((), (), (), Status.TEST_EVENT, is_test_event=True)
    router.invalidate()  # rules made (or rolled back) by tests are seen at once
    items = [BatchItem(event, route(event), message_id, queue_name) for event in events]
    started = _StartedRuns()
    alias = db_router.db_for_write(HandlerRun)
    with captured_followups(send=send_followups) as followups, started:
        with TestCase.captureOnCommitCallbacks(using=alias, execute=True):
            outcomes = dispatch_batch(items, mode=dispatch)
        commands = tuple(followups.commands)
    runs = _delivered_runs(items, outcomes, started.run_ids)
    return Delivery(events, runs, commands, message_status(outcomes))


def _events_of(value: S3Event | Iterable[S3Event] | Payload) -> tuple[tuple[S3Event, ...], bool]:
    if isinstance(value, S3Event):
        return (value,), False
    if isinstance(value, Mapping | str | bytes | bytearray):
        parsed = parse_message(value)
        return parsed.events, parsed.is_test_event
    events = tuple(value)
    if not all(isinstance(event, S3Event) for event in events):
        raise TypeError(
            "deliver() takes an S3Event, an iterable of S3Events, or a message body (a dict "
            "or JSON text)."
        )
    return events, False


class _StartedRuns:
    """The runs whose handler was called in this thread while open (`run_started`)."""

    def __init__(self) -> None:
        self.run_ids: set[int] = set()
        self.thread = threading.get_ident()

    def __enter__(self) -> _StartedRuns:
        signals.run_started.connect(self._started, dispatch_uid=id(self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        signals.run_started.disconnect(dispatch_uid=id(self))

    def _started(self, sender: str, run: HandlerRun, **kwargs: Any) -> None:
        if threading.get_ident() == self.thread:
            self.run_ids.add(run.pk)


def _delivered_runs(
    items: Sequence[BatchItem], outcomes: Sequence[DispatchOutcome], started: set[int]
) -> tuple[DeliveredRun, ...]:
    pairs = [
        (item.event, run)
        for item, outcome in zip(items, outcomes, strict=True)
        for run in outcome.runs
    ]
    rows = HandlerRun.objects.in_bulk([run.run_id for _, run in pairs if run.run_id is not None])
    delivered = []
    unclaimed = set(started)  # an event twice in one delivery ran once: its first item did
    for event, outcome in pairs:
        ran = outcome.run_id in unclaimed
        unclaimed.discard(outcome.run_id)
        delivered.append(_delivered(event, outcome, rows.get(outcome.run_id), ran))
    return tuple(delivered)


def _delivered(
    event: S3Event, outcome: RunOutcome, row: HandlerRun | None, ran: bool
) -> DeliveredRun:
    state = row.state if row is not None else outcome.state
    row_error = row.error if row is not None and state in _FAILING else ""
    return DeliveredRun(
        handler_name=outcome.handler_name,
        event=event,
        run_id=outcome.run_id,
        state=state,
        ran=ran,
        skipped=outcome.skipped and not ran,
        deferred=outcome.deferred,
        attempts=row.attempts if row is not None else 0,
        error=outcome.error or row_error,
        result_summary=row.result_summary if row is not None else "",
        result=outcome.result,
        exception=outcome.exception,
    )


_FAILING = frozenset({RunState.FAILED, RunState.RETRYING})
