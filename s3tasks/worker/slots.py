"""`Slots`: free worker threads plus the `--max-messages` budget, reserved before a receive.

This is the worker's backpressure: a receiver asks SQS only for as many messages as it could
reserve here, so every received message already has a thread waiting for it.
"""

from __future__ import annotations

import threading


class Slots:
    """`capacity` worker slots and an optional total budget of messages to receive."""

    def __init__(self, capacity: int, budget: int | None = None) -> None:
        self._free = threading.Semaphore(capacity)
        self._lock = threading.Lock()
        self._budget = budget  # None = unlimited

    @property
    def exhausted(self) -> bool:
        """True once the whole `--max-messages` budget was handed out."""
        return self._budget == 0

    def take(self, most: int, wait: float) -> int:
        """Reserve 1..`most` slots (waiting up to `wait` s for the first); 0 when none."""
        if not self._free.acquire(timeout=wait):
            return 0
        taken = 1
        while taken < most and self._free.acquire(blocking=False):
            taken += 1
        with self._lock:
            if self._budget is not None:
                granted = min(taken, self._budget)
                self._budget -= granted
                for _ in range(taken - granted):
                    self._free.release()
                taken = granted
        return taken

    def give_back(self, count: int) -> None:
        """Return reserved slots that were not used (and their budget)."""
        if count <= 0:
            return
        with self._lock:
            if self._budget is not None:
                self._budget += count
        for _ in range(count):
            self._free.release()

    def release(self) -> None:
        """A worker thread finished its message: its slot is free again (budget stays spent)."""
        self._free.release()
