"""`Periodic`: run a function every few seconds on a daemon thread, surviving its errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("s3tasks.worker")


class Periodic:
    """Calls `func` every `interval` seconds until `stop()`; an exception is logged, not fatal."""

    def __init__(self, name: str, interval: float, func: Callable[[], Any]) -> None:
        self.name = name
        self.interval = interval
        self.func = func
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.func()
            except Exception:
                logger.exception(
                    "s3tasks worker: %s failed; trying again in %.1fs", self.name, self.interval
                )
