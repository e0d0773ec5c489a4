"""Child processes of the demo, and how they end: every one of them, on any shutdown signal.

The demo's inner process leads its own process group, which its worker and runserver join.
Ending the demo asks the leader first (it stops its children in order), then signals whatever
is left in the group: SIGTERM, and SIGKILL after a grace period. Nothing outlives the demo,
whether it was stopped with Ctrl-C, `kill`, a closed terminal, or ran in the background.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType, TracebackType

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LEADER_GRACE = 20.0  # the worker may be finishing a batch (its --wait-time is 1 s)
GROUP_GRACE = 5.0
KILL_WAIT = 5.0


class SignalLatch:
    """Record SIGTERM, SIGINT and SIGHUP instead of raising mid-statement.

    The signals are handled even when they were ignored on entry (a shell starts `cmd &` with
    SIGINT ignored), except SIGHUP under `nohup`; a second signal cannot cut the cleanup
    short: it only makes it hurry.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = SHUTDOWN_SIGNALS) -> None:
        self.signals = signals
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    @property
    def triggered(self) -> bool:
        return bool(self.received)

    @property
    def hurry(self) -> bool:
        """A second signal: skip the grace periods."""
        return len(self.received) > 1

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def __enter__(self) -> SignalLatch:
        for signum in self.signals:
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started under nohup: asked to outlive the terminal
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def interrupt_on_shutdown_signals() -> None:
    """In a demo process: SIGTERM and SIGINT raise KeyboardInterrupt (cleanup in `finally`),
    also when SIGINT was inherited as ignored."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def never() -> bool:
    return False


def wait_until(done: Callable[[], bool], timeout: float, hurry: Callable[[], bool]) -> bool:
    """Poll `done` for up to `timeout` seconds (less if `hurry()` turns true)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline or hurry():
            return False
        time.sleep(0.05)
    return True


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to a process group; False when no process is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def end_process_group(
    leader: subprocess.Popen, *, grace: float = LEADER_GRACE, hurry: Callable[[], bool] = never
) -> None:
    """End `leader` (started with `start_new_session=True`) and everything in its group."""
    pgid = leader.pid
    if leader.poll() is None:
        leader.send_signal(signal.SIGTERM)
        wait_until(lambda: leader.poll() is not None, grace, hurry)

    def group_gone() -> bool:
        leader.poll()  # reap the leader: a zombie still counts as a group member
        return not signal_group(pgid, 0)

    if not group_gone() and signal_group(pgid, signal.SIGTERM):
        if not wait_until(group_gone, GROUP_GRACE, hurry):
            signal_group(pgid, signal.SIGKILL)
            wait_until(group_gone, KILL_WAIT, never)
    leader.wait()


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop one child politely (SIGINT, as Ctrl-C would), then firmly."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
