"""Counters of a worker process and the periodic stats log line built from them.

Observers (the Prometheus metrics of `s3tasks.worker.metrics`) see each count with the queue
it is about, and each received batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from s3tasks.worker.sqs import QueueRef, ReceivedMessage


@dataclass(frozen=True)
class StatsSnapshot:
    """The counters at one moment (cumulative since start), plus what is in flight."""

    received: int = 0
    handled: int = 0
    failed: int = 0
    failed_permanently: int = 0
    deferred: int = 0
    unavailable: int = 0
    malformed: int = 0
    deleted: int = 0
    delete_failed: int = 0
    released: int = 0
    extended: int = 0
    receive_errors: int = 0
    abandoned: int = 0
    in_flight: int = 0
    events: int = 0
    elapsed: float = 0.0

    @property
    def processed(self) -> int:
        return (
            self.handled
            + self.failed
            + self.failed_permanently
            + self.deferred
            + self.unavailable
            + self.malformed
        )


COUNTERS = (
    "received",
    "handled",
    "failed",
    "failed_permanently",
    "deferred",
    "unavailable",
    "malformed",
    "deleted",
    "delete_failed",
    "released",
    "extended",
    "receive_errors",
    "abandoned",
    "events",
)


class StatsObserver(Protocol):
    """What `WorkerStats.observe` accepts: told of every count made for a queue."""

    def counted(self, name: str, queue: str, amount: int) -> None: ...

    def received(self, queue: QueueRef, messages: Sequence[ReceivedMessage]) -> None: ...


class WorkerStats:
    """Thread-safe counters; `line()` renders the periodic log line with the recent rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._started = time.monotonic()
        self._last_line_at = self._started
        self._last_line_processed = 0
        self._observers: tuple[StatsObserver, ...] = ()

    def observe(self, observer: StatsObserver) -> None:
        """Tell `observer` of every count made for a queue from now on."""
        with self._lock:
            self._observers = (*self._observers, observer)

    def add(self, name: str, amount: int = 1, *, queue: str | None = None) -> None:
        """Add `amount` to counter `name`; `queue` names the queue it is about, if one."""
        with self._lock:
            self._counts[name] += amount
        if queue is not None and amount:
            for observer in self._observers:
                observer.counted(name, queue, amount)

    def add_per_queue(self, name: str, messages: Sequence[ReceivedMessage]) -> None:
        """Count each of `messages` under `name`, for its own queue."""
        per_queue: dict[str, int] = {}
        for message in messages:
            per_queue[message.queue.name] = per_queue.get(message.queue.name, 0) + 1
        for queue, amount in per_queue.items():
            self.add(name, amount, queue=queue)

    def received(self, queue: QueueRef, messages: Sequence[ReceivedMessage]) -> None:
        """A receive from `queue` returned `messages` (not empty)."""
        self.add("received", len(messages), queue=queue.name)
        for observer in self._observers:
            observer.received(queue, messages)

    def snapshot(self, in_flight: int = 0) -> StatsSnapshot:
        with self._lock:
            counts = dict(self._counts)
        return StatsSnapshot(
            **counts, in_flight=in_flight, elapsed=time.monotonic() - self._started
        )

    def line(self, in_flight: int = 0) -> str:
        """`received=… handled=… failed=… deleted=… in_flight=… rate=…/s` since the last line."""
        snap = self.snapshot(in_flight)
        now = time.monotonic()
        with self._lock:
            span = max(now - self._last_line_at, 1e-9)
            rate = (snap.processed - self._last_line_processed) / span
            self._last_line_at, self._last_line_processed = now, snap.processed
        return (
            f"received={snap.received} handled={snap.handled} failed={snap.failed} "
            f"failed_permanently={snap.failed_permanently} deferred={snap.deferred} "
            f"unavailable={snap.unavailable} "
            f"malformed={snap.malformed} deleted={snap.deleted} released={snap.released} "
            f"in_flight={snap.in_flight} events={snap.events} rate={rate:.1f}/s "
            f"uptime={snap.elapsed:.0f}s"
        )
