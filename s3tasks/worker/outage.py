"""`OutageGate`: stop receiving while the database (or broker) is down, resume by itself.

Receiving while nothing can be recorded only uses up the messages' receive counts and sends
good events to the dead-letter queue. So the first batch that finds a service unreachable
closes the gate: receivers wait, messages not yet started are released, and a probe thread
checks with backoff until the service answers, then opens the gate again. Each change of
state is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("s3tasks.worker")

Probe = Callable[[], "str | None"]  # None when everything answers, else what does not


class OutageGate:
    """Open while the services answer; `report()` closes it until `probe()` succeeds."""

    def __init__(self, probe: Probe, *, first_wait: float = 1.0, max_wait: float = 30.0) -> None:
        self._probe = probe
        self._first_wait = first_wait
        self._max_wait = max_wait
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._since = 0.0
        self.outages = 0  # how many times the gate closed; workers compare it (see `loop`)

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def wait_open(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the gate to be open; whether it is."""
        return self._open.wait(timeout)

    def report(self, reason: str) -> None:
        """A unit of work found a service unreachable: close the gate and start probing."""
        with self._lock:
            if not self._open.is_set() or self._stopped.is_set():
                return
            self._open.clear()
            self._since = time.monotonic()
            self.outages += 1
        logger.error(
            "s3tasks worker: %s; stopped receiving and releasing held messages until it is "
            "back (probing every %.0f-%.0fs)",
            reason,
            self._first_wait,
            self._max_wait,
        )
        threading.Thread(target=self._probe_until_back, name="s3tasks-probe", daemon=True).start()

    def stop(self) -> None:
        """Stop probing (shutdown); waiters are let through so they can see the stop flag."""
        self._stopped.set()
        self._open.set()

    def _probe_until_back(self) -> None:
        wait = self._first_wait
        while not self._stopped.wait(wait):
            reason = self._safe_probe()
            if reason is None:
                logger.warning(
                    "s3tasks worker: back after %.0fs; receiving again",
                    time.monotonic() - self._since,
                )
                self._open.set()
                return
            logger.debug("s3tasks worker: still down: %s (next probe in %.0fs)", reason, wait)
            wait = min(self._max_wait, wait * 2)

    def _safe_probe(self) -> str | None:
        try:
            return self._probe()
        except Exception as exc:  # a probe that crashes says the service is not back
            return f"probe failed ({type(exc).__name__}: {exc})"
