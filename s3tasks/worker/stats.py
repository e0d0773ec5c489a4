"""Counters of a worker process and the periodic stats log line built from them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


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


class WorkerStats:
    """Thread-safe counters; `line()` renders the periodic log line with the recent rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._started = time.monotonic()
        self._last_line_at = self._started
        self._last_line_processed = 0

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

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
