"""The SQS consumer behind `manage.py sqs_worker`.

Threads, and why each exists:

- one *receiver* per queue: long-polls its queue, but only for as many messages as there are
  free worker slots (backpressure); checks the stop flag right before every receive;
- `concurrency` *workers*: each takes one received batch and runs `process_messages` (the
  batch core shared with Lambda: one transaction and a few SQL statements for the whole
  batch) wrapped in `close_old_connections()`; a batch holds one slot per message, so the
  messages in flight never exceed `concurrency`;
- one *acker* (`acker.Acker`): deletes handled messages in batches and sets a backoff
  visibility on failed ones, so a message is deleted only after all its events were handled
  or handed off;
- periodic helpers: the visibility *heartbeat*, the *stats* line, the *outbox* relay and the
  worker's *presence* row (`WorkerHeartbeat`, for the admin's dashboard).

The main thread only starts them, watches the exit conditions and runs the shutdown.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from django.db import close_old_connections, connections

from s3tasks.processing.messages import InboundMessage, MessageOutcome, Status, process_messages
from s3tasks.worker.acker import RELEASED, Acker
from s3tasks.worker.inflight import InFlight
from s3tasks.worker.options import WorkerOptions
from s3tasks.worker.outage import OutageGate, Probe
from s3tasks.worker.periodic import Periodic
from s3tasks.worker.slots import Slots
from s3tasks.worker.sqs import QueueRef, ReceivedMessage, SqsQueueClient
from s3tasks.worker.stats import StatsSnapshot, WorkerStats

logger = logging.getLogger("s3tasks.worker")

ProcessFunc = Callable[..., MessageOutcome]  # (message, dispatch_mode=) -> outcome
BatchProcessFunc = Callable[..., list[MessageOutcome]]  # (messages, dispatch_mode=) -> outcomes
SLOT_WAIT = 0.5  # how long a receiver waits for a free worker before re-checking the stop flag
EMPTY_SHORT_POLL_PAUSE = 0.1  # with --wait-time 0, pause after an empty receive


class Presence(Protocol):
    """The worker's row for the admin's dashboard (`s3tasks.worker.presence.WorkerPresence`)."""

    interval: float

    def beat(self, snapshot: StatsSnapshot) -> None: ...

    def leave(self) -> None: ...


class Consumer:
    """Consume `queues` with a thread pool until told to stop (or an exit condition holds)."""

    def __init__(
        self,
        sqs: SqsQueueClient,
        queues: Sequence[QueueRef],
        options: WorkerOptions,
        *,
        process: ProcessFunc | None = None,
        process_batch: BatchProcessFunc = process_messages,
        record_malformed: Callable[[ReceivedMessage, MessageOutcome], None] | None = None,
        relay: Callable[[], Any] | None = None,
        recover: Callable[[], Any] | None = None,
        cleanup: Callable[[], Any] | None = None,
        presence: Presence | None = None,
        probe: Probe | None = None,
        hints: Sequence[str] = (),
    ) -> None:
        if not queues:
            raise ValueError("Consumer needs at least one queue.")
        self.sqs = sqs
        self.queues = list(queues)
        self.options = options
        self.stats = WorkerStats()
        self.inflight = InFlight()
        self._process_batch = process_batch if process is None else _one_by_one(process)
        self._record_malformed = record_malformed
        self._relay = relay
        self._recover = recover
        self._cleanup = cleanup
        self._presence = presence
        self.gate = OutageGate(probe or _always_up)
        self.hints = list(hints)  # advice for the operator, named on the start line
        self._slots = Slots(options.concurrency, options.max_messages)
        self._work: queue.SimpleQueue[list[ReceivedMessage] | None] = queue.SimpleQueue()
        self.stop_receiving = threading.Event()  # no receive starts once this is set
        self.abandon_unstarted = threading.Event()  # shutdown: hand unstarted messages back
        self._signals = 0
        self._last_activity = time.monotonic()
        self._last_touch = 0.0
        self._receivers: list[threading.Thread] = []
        self._acker = Acker(sqs, options, self.stats, self.inflight, self._mark_active)
        # A receiver takes at most its share of the slots: one long-polling an empty queue
        # must not hold every slot while another queue has messages waiting.
        self._receive_size = min(options.batch_size, max(1, options.concurrency // len(queues)))

    # --- public ------------------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = False) -> StatsSnapshot:
        """Consume until stopped; return the final counters."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()  # Python only allows it on the main thread
        workers = [
            _thread(self._worker_loop, f"s3tasks-worker-{i}")
            for i in range(self.options.concurrency)
        ]
        acker = _thread(self._acker.run, "s3tasks-acker")
        periodic = self._periodic_tasks()
        self._receivers = [
            _thread(self._receive_loop, f"s3tasks-receive-{q.name}", q) for q in self.queues
        ]
        self._log_start()
        try:
            self._beat_if_up()  # on the dashboard from the start, not one interval later
            self._watch()
        finally:
            self._shutdown(workers, acker, periodic)
        final = self.stats.snapshot(len(self.inflight))
        logger.info(
            "s3tasks worker: stopped; %s",
            self.stats.line(len(self.inflight)),
            extra={"counts": asdict(final)},
        )
        return final

    def stop(self, *, abandon_unstarted: bool = True) -> None:
        """Stop receiving now; let in-flight work finish (graceful shutdown)."""
        self.stop_receiving.set()
        if abandon_unstarted:
            self.abandon_unstarted.set()

    # --- main thread -------------------------------------------------------------------------

    def _log_start(self) -> None:
        names = [q.name for q in self.queues]
        dispatch = self.options.dispatch or "S3TASKS['DISPATCH']"
        logger.info(
            "s3tasks worker: consuming %s (dispatch %s, concurrency %d, batch %d, wait %ds, "
            "visibility %ds)%s",
            ", ".join(names),
            dispatch,
            self.options.concurrency,
            self.options.batch_size,
            self.options.wait_time,
            self.options.visibility_timeout,
            "".join(f"; hint: {hint}" for hint in self.hints),
            extra={
                "queues": names,
                "dispatch": dispatch,
                "concurrency": self.options.concurrency,
                "hints": self.hints,
            },
        )

    def _watch(self) -> None:
        idle_limit = self.options.exit_when_idle
        while not self.stop_receiving.is_set():
            if not self._receiving() and self._drained():  # --once / --max-messages reached
                return
            if idle_limit is not None and self._drained():
                if time.monotonic() - self._last_activity >= idle_limit:
                    logger.info("s3tasks worker: idle for %.1fs, exiting", idle_limit)
                    return
            time.sleep(0.05)

    def _receiving(self) -> bool:
        return any(t.is_alive() for t in self._receivers)

    def _drained(self) -> bool:
        return len(self.inflight) == 0 and self._acker.busy == 0

    def _mark_active(self) -> None:
        self._last_activity = time.monotonic()

    def _shutdown(
        self, workers: list[threading.Thread], acker: threading.Thread, periodic: list[Periodic]
    ) -> None:
        self.stop_receiving.set()
        held = len(self.inflight)
        logger.info(
            "s3tasks worker: shutting down: waiting up to %.0fs for %d in-flight message(s)",
            self.options.shutdown_timeout,
            held,
            extra={"in_flight": held},
        )
        deadline = time.monotonic() + self.options.shutdown_timeout
        # Wait for receivers too: a long poll already under way may still return messages,
        # which are then handed back (signal) or handled (idle exit) rather than left hidden.
        while time.monotonic() < deadline and not (self._drained() and not self._receiving()):
            time.sleep(0.02)
        if not self._drained():
            self._abandon_in_flight()
        database_up = self.gate.is_open  # during an outage the row is left to go stale
        self.gate.stop()
        for _ in workers:
            self._work.put(None)
        if self._drained():
            for worker in workers:  # idle now: let each close its database connections
                worker.join(timeout=5)
        self._acker.close()
        acker.join(timeout=10)
        for task in periodic:
            task.stop()
        if self._presence is not None and database_up:
            self._presence.leave()

    def _abandon_in_flight(self) -> None:
        """Shutdown timed out: hand what is still in flight back to SQS now, and say which.

        Their handlers may still be running; whatever they did not commit is rolled back when
        the process exits, and a redelivery runs it again (a committed run is not run twice).
        """
        held = self.inflight.messages()
        if not held:  # only deletes still being settled: nothing is abandoned
            return
        self.stats.add("abandoned", len(held))
        ids = ", ".join(m.message_id for m in held[:20]) + (" …" if len(held) > 20 else "")
        try:
            result = self.sqs.change_visibility(held, [0] * len(held))
            released = len(result.succeeded)
        except Exception as exc:  # SQS unreachable: they come back when their timeout ends
            logger.warning("s3tasks worker: could not release in-flight messages: %s", exc)
            released = 0
        logger.error(
            "s3tasks worker: shutdown timeout (%.0fs) reached with %d message(s) in flight; "
            "released %d for redelivery now, the rest reappear when their visibility timeout "
            "ends: %s",
            self.options.shutdown_timeout,
            len(held),
            released,
            ids,
        )

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: Any) -> None:
            self._signals += 1
            name = signal.Signals(signum).name
            if self._signals > 1:
                logger.warning("s3tasks worker: second %s, exiting now", name)
                os._exit(1)
            logger.info(
                "s3tasks worker: %s received; no more receives (send it again to exit at once)",
                name,
            )
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # --- receivers ---------------------------------------------------------------------------

    def _receive_loop(self, source: QueueRef) -> None:
        pause = self.options.receive_error_backoff
        while not self.stop_receiving.is_set():
            self._touch_liveness()
            if not self.gate.wait_open(SLOT_WAIT):  # a service is down: receive nothing
                continue
            wanted = self._slots.take(self._receive_size, SLOT_WAIT)
            if wanted == 0:
                if self._slots.exhausted:
                    return
                continue
            if self.stop_receiving.is_set():  # checked right before every receive
                self._slots.give_back(wanted)
                return
            try:
                messages = self.sqs.receive(
                    source,
                    max_messages=wanted,
                    wait_time=self.options.wait_time,
                    visibility_timeout=self.options.visibility_timeout,
                )
            except Exception as exc:  # a network error must not kill the receiver
                self._slots.give_back(wanted)
                self.stats.add("receive_errors", queue=source.name)
                logger.warning(
                    "s3tasks worker: receive from %s failed (%s); retrying in %.1fs",
                    source.name,
                    exc,
                    pause,
                )
                self.stop_receiving.wait(pause)
                pause = min(30.0, pause * 2)
                continue
            pause = self.options.receive_error_backoff
            self._accept(source, messages, wanted)
            if not messages and self.options.wait_time == 0:
                self.stop_receiving.wait(EMPTY_SHORT_POLL_PAUSE)  # no hot loop on short polls
            if self.options.once:
                return

    def _accept(self, source: QueueRef, messages: list[ReceivedMessage], wanted: int) -> None:
        self._slots.give_back(wanted - len(messages))
        if not messages:
            return
        self._mark_active()
        self.stats.received(source, messages)
        self._acker.taken(len(messages))
        for message in messages:
            self.inflight.add(message, self.options.visibility_timeout)
        self._work.put(messages)  # one worker handles the received batch as a whole

    def _touch_liveness(self) -> None:
        path = self.options.heartbeat_file
        now = time.monotonic()
        if not path or now - self._last_touch < 1.0:
            return
        self._last_touch = now
        try:
            Path(path).touch()
        except OSError as exc:
            logger.warning("s3tasks worker: cannot touch heartbeat file %s: %s", path, exc)

    # --- workers -----------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        outages_seen = 0
        while True:
            batch = self._work.get()
            if batch is None:
                connections.close_all()  # this thread's connections; it ends now
                return
            if self.gate.outages != outages_seen:  # connections from before it are dead
                outages_seen = self.gate.outages
                connections.close_all()
            if self.abandon_unstarted.is_set():
                outcomes: list[MessageOutcome | None] = [RELEASED] * len(batch)
            elif not self.gate.is_open:  # received before the outage was seen: hand back
                outcomes = [_held_back(m) for m in batch]
            else:
                outcomes = list(self._handle(batch))
                self._watch_for_outage(outcomes)
            for message, outcome in zip(batch, outcomes, strict=True):
                self._acker.finished(message, outcome)
                self._slots.release()

    def _handle(self, batch: list[ReceivedMessage]) -> list[MessageOutcome]:
        inbound = [
            InboundMessage(
                message_id=message.message_id,
                body=message.body,
                receive_count=message.receive_count,
                queue_name=message.queue.name,
                attributes=message.attributes,
            )
            for message in batch
        ]
        close_old_connections()
        try:
            outcomes = self._process_batch(inbound, dispatch_mode=self.options.dispatch)
            return [self._recorded(m, o) for m, o in zip(batch, outcomes, strict=True)]
        except Exception as exc:  # process_messages never raises; a stand-in might
            logger.exception("s3tasks worker: a batch of %d message(s) failed", len(batch))
            return [MessageOutcome(m.message_id, Status.FAILED, error=str(exc)) for m in batch]
        finally:
            close_old_connections()

    def _watch_for_outage(self, outcomes: Sequence[MessageOutcome | None]) -> None:
        for outcome in outcomes:
            if outcome is not None and outcome.status == Status.UNAVAILABLE:
                self.gate.report(outcome.error.removeprefix("unavailable: "))
                return

    def _recorded(self, message: ReceivedMessage, outcome: MessageOutcome) -> MessageOutcome:
        """`outcome`, after recording a malformed message (a recorder error fails it)."""
        if outcome.status != Status.MALFORMED or self._record_malformed is None:
            return outcome
        try:
            self._record_malformed(message, outcome)
        except Exception as exc:
            logger.exception("s3tasks worker: recording malformed %s failed", message.message_id)
            return MessageOutcome(message.message_id, Status.FAILED, error=str(exc))
        return outcome

    # --- periodic helpers --------------------------------------------------------------------

    def _periodic_tasks(self) -> list[Periodic]:
        tasks = [
            Periodic("s3tasks-heartbeat", self.options.heartbeat_interval, self._extend_visibility),
            Periodic("s3tasks-stats", self.options.stats_interval, self._log_stats),
        ]
        if self._relay is not None:
            tasks.append(Periodic("s3tasks-outbox", self.options.outbox_interval, self._relay))
        if self._recover is not None and self.options.recovery_interval > 0:
            tasks.append(
                Periodic("s3tasks-recover", self.options.recovery_interval, self._recover_if_up)
            )
        if self._cleanup is not None and self.options.cleanup_interval > 0:
            tasks.append(
                Periodic("s3tasks-cleanup", self.options.cleanup_interval, self._cleanup_if_up)
            )
        if self._presence is not None:
            tasks.append(Periodic("s3tasks-presence", self._presence.interval, self._beat_if_up))
        for task in tasks:
            task.start()
        return tasks

    def _extend_visibility(self) -> None:
        timeout = self.options.visibility_timeout
        due = self.inflight.due(within=timeout / 2 + self.options.heartbeat_interval)
        if not due:
            return
        result = self.sqs.change_visibility(due, [timeout] * len(due))
        self.inflight.extended(result.succeeded, timeout)
        self.stats.add_per_queue("extended", result.succeeded)

    def _recover_if_up(self) -> None:
        if self.gate.is_open and self._recover is not None:
            self._recover()

    def _cleanup_if_up(self) -> None:
        if self.gate.is_open and self._cleanup is not None:
            self._cleanup()

    def _beat_if_up(self) -> None:
        if self.gate.is_open and self._presence is not None:
            self._presence.beat(self.stats.snapshot(len(self.inflight)))

    def _log_stats(self) -> None:
        logger.info("s3tasks worker: %s", self.stats.line(len(self.inflight)))


def _one_by_one(process: ProcessFunc) -> BatchProcessFunc:
    """A batch processor calling a per-message `process` (tests and benchmark stand-ins)."""

    def process_batch(
        messages: list[InboundMessage], dispatch_mode: str | None = None
    ) -> list[MessageOutcome]:
        return [_one(process, m, dispatch_mode) for m in messages]

    return process_batch


def _one(
    process: ProcessFunc, message: InboundMessage, dispatch_mode: str | None
) -> MessageOutcome:
    try:
        return process(message, dispatch_mode=dispatch_mode)
    except Exception as exc:  # fails this message only, as the batch core would
        logger.exception("s3tasks worker: message %s failed", message.message_id)
        return MessageOutcome(message.message_id, Status.FAILED, error=str(exc))


def _always_up() -> str | None:
    return None


def _held_back(message: ReceivedMessage) -> MessageOutcome:
    """The outcome of a message not started because a service is down."""
    return MessageOutcome(message.message_id, Status.UNAVAILABLE, error="held back during outage")


def _thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    # Daemon threads: a forced exit (second signal, shutdown timeout) must not hang on them.
    thread = threading.Thread(target=target, name=name, args=args, daemon=True)
    thread.start()
    return thread
