"""Capture the follow-up commands handlers issue, instead of sending them.

Inside `captured_followups()` every command still becomes an outbox row in the handler's
transaction, exactly as in production (a handler that fails rolls its commands back), but no
relay is started: nothing reaches Celery, SQS or SNS. The capture lists the commands whose
rows exist, i.e. those production would send once the transaction commits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from s3tasks.followups import outbox
from s3tasks.followups.commands import FollowUpCommand
from s3tasks.models import OutboxMessage


class FollowUpCapture:
    """The follow-up commands submitted while a `captured_followups()` block is open."""

    def __init__(self, *, send: bool = False) -> None:
        self.send = send
        self._submitted: list[tuple[FollowUpCommand, int]] = []
        self._lock = threading.Lock()

    def record(self, command: FollowUpCommand, message: OutboxMessage) -> None:
        with self._lock:
            self._submitted.append((command, message.pk))

    @property
    def commands(self) -> list[FollowUpCommand]:
        """The commands whose outbox rows exist (not rolled back with a failed handler), in
        the order they were issued. Read it while the test's database is still there."""
        with self._lock:
            submitted = list(self._submitted)
        if not submitted:
            return []
        kept = set(
            OutboxMessage.objects.filter(pk__in=[pk for _, pk in submitted]).values_list(
                "pk", flat=True
            )
        )
        return [command for command, pk in submitted if pk in kept]

    def __iter__(self) -> Iterator[FollowUpCommand]:
        return iter(self.commands)

    def __len__(self) -> int:
        return len(self.commands)

    def __repr__(self) -> str:
        return f"<FollowUpCapture {len(self._submitted)} submitted, send={self.send}>"


_active: list[FollowUpCapture] = []
_active_lock = threading.Lock()
_originals: dict[str, Callable[..., Any]] = {}


@contextmanager
def captured_followups(*, send: bool = False) -> Iterator[FollowUpCapture]:
    """Record every follow-up command issued in the block; with `send=False` (the default)
    none is relayed, so tests need no broker and no AWS.

    The commands stay in the outbox unsent (a test's rollback removes them); `relay_outbox()`
    would send them. Blocks may nest: a command is relayed only if every open block sends.
    """
    capture = FollowUpCapture(send=send)
    with _active_lock:
        if not _active:
            _install()
        _active.append(capture)
    try:
        yield capture
    finally:
        with _active_lock:
            _active.remove(capture)
            if not _active:
                _uninstall()


def _install() -> None:
    # `outbox.relay_after_commit` is looked up on the module at every submit (see
    # FollowUpCommand.submit), so replacing it there holds every relay back.
    _originals["submit"] = FollowUpCommand.submit
    _originals["relay"] = outbox.relay_after_commit
    FollowUpCommand.submit = _submit_and_record  # type: ignore[method-assign]
    outbox.relay_after_commit = _relay_unless_captured


def _uninstall() -> None:
    FollowUpCommand.submit = _originals.pop("submit")  # type: ignore[method-assign]
    outbox.relay_after_commit = _originals.pop("relay")


def _submit_and_record(command: FollowUpCommand) -> OutboxMessage:
    message = _originals["submit"](command)
    with _active_lock:
        captures = list(_active)
    for capture in captures:
        capture.record(command, message)
    return message


def _relay_unless_captured(message_id: int) -> None:
    with _active_lock:
        send = all(capture.send for capture in _active)
        relay = _originals["relay"]
    if send:
        relay(message_id)
