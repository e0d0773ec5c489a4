"""The messages a worker holds (received, not yet deleted or released) and their deadlines.

The heartbeat asks which messages will become visible again soon and extends them, so a long
handler never lets SQS hand its message to another worker. Size is bounded by the worker's
concurrency (backpressure), so memory stays flat however long the process runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from s3tasks.worker.sqs import ReceivedMessage


class InFlight:
    """Thread-safe map of held messages to the monotonic time their visibility ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[ReceivedMessage, float]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._deadlines)

    def add(self, message: ReceivedMessage, visibility_timeout: float) -> None:
        with self._lock:
            self._deadlines[id(message)] = (message, time.monotonic() + visibility_timeout)

    def discard(self, messages: Iterable[ReceivedMessage]) -> None:
        """Stop tracking (before deleting/releasing, so the heartbeat never extends them)."""
        with self._lock:
            for message in messages:
                self._deadlines.pop(id(message), None)

    def due(self, within: float) -> list[ReceivedMessage]:
        """Held messages whose visibility ends in less than `within` seconds."""
        limit = time.monotonic() + within
        with self._lock:
            return [m for m, deadline in self._deadlines.values() if deadline < limit]

    def extended(self, messages: Iterable[ReceivedMessage], visibility_timeout: float) -> None:
        """Record new deadlines for messages whose visibility was just extended."""
        deadline = time.monotonic() + visibility_timeout
        with self._lock:
            for message in messages:
                if id(message) in self._deadlines:
                    self._deadlines[id(message)] = (message, deadline)

    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return [m for m, _ in self._deadlines.values()]
