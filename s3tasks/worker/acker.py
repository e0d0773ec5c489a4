"""The consumer's finishing side: settle handled messages with SQS, in batches.

Worker threads hand each message and its outcome to the `Acker`; its thread deletes the
handled ones and sets a backoff visibility on the failed ones, so a message is deleted only
after all its events were handled or handed off. It also counts the messages taken by a
worker and not yet settled, which the consumer needs to know when it is drained.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from s3tasks.processing.messages import MessageOutcome, Status
from s3tasks.worker.inflight import InFlight
from s3tasks.worker.options import WorkerOptions
from s3tasks.worker.sqs import ReceivedMessage, SqsQueueClient, backoff_seconds
from s3tasks.worker.stats import WorkerStats

logger = logging.getLogger("s3tasks.worker")

ACK_LINGER = 0.02  # a short wait for more finished messages, so deletes go out in bigger batches
MAX_GATHER = 50  # finished messages settled together at most
RELEASED = None  # the outcome of a message handed back unstarted (visibility 0)

Finished = tuple[ReceivedMessage, MessageOutcome | None]


class Acker:
    """Settles finished messages; `run` is the acker thread's body, `close` ends it."""

    def __init__(
        self,
        sqs: SqsQueueClient,
        options: WorkerOptions,
        stats: WorkerStats,
        inflight: InFlight,
        on_settled: Callable[[], None],
    ) -> None:
        self.sqs = sqs
        self.options = options
        self.stats = stats
        self.inflight = inflight
        self._on_settled = on_settled
        self._done: queue.Queue[Finished | None] = queue.Queue()
        self._busy = 0  # messages taken by a worker thread and not yet settled
        self._busy_lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Messages taken by a worker thread and not yet settled."""
        return self._busy

    def taken(self, count: int) -> None:
        """`count` received messages go to a worker; they are busy until settled."""
        with self._busy_lock:
            self._busy += count

    def finished(self, message: ReceivedMessage, outcome: MessageOutcome | None) -> None:
        """A worker is done with `message` (`RELEASED`: handed back unstarted)."""
        self._done.put((message, outcome))

    def close(self) -> None:
        """Let `run` settle what is queued, then return."""
        self._done.put(None)

    def run(self) -> None:
        """Settle finished messages until closed; one failure never stops the loop."""
        closed = False
        while not closed:
            try:
                item = self._done.get(timeout=0.2)
            except queue.Empty:
                continue
            batch, closed = self._gather(item)
            if batch:
                try:
                    self._settle(batch)
                except Exception:  # never lose the acker: messages just get redelivered
                    logger.exception("s3tasks worker: settling %d message(s) failed", len(batch))
                with self._busy_lock:
                    self._busy -= len(batch)

    def _gather(self, first: Finished | None) -> tuple[list[Finished], bool]:
        """`first` plus whatever else finished meanwhile (up to a few batches' worth)."""
        if first is None:
            return [], True
        batch = [first]
        deadline = time.monotonic() + ACK_LINGER
        while len(batch) < MAX_GATHER:
            timeout = deadline - time.monotonic()
            if timeout <= 0 or self._busy <= len(batch):
                timeout = 0
            try:
                item = self._done.get(timeout=timeout) if timeout else self._done.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _settle(self, batch: list[Finished]) -> None:
        deletes, retries, timeouts = [], [], []
        for message, outcome in batch:
            queue = message.queue.name
            if outcome is RELEASED:
                self.stats.add("released", queue=queue)
                retries.append(message)
                timeouts.append(0)
                continue
            self.stats.add("events", outcome.events, queue=queue)
            if outcome.deletable:
                failed_for_good = outcome.status == Status.FAILED_PERMANENTLY
                self.stats.add("failed_permanently" if failed_for_good else "handled", queue=queue)
                deletes.append(message)
                continue
            retries.append(message)
            timeouts.append(self._release_after(message, outcome))
        self.inflight.discard(m for m, _ in batch)
        if deletes:
            result = self.sqs.delete(deletes)
            self.stats.add_per_queue("deleted", result.succeeded)
            self.stats.add_per_queue("delete_failed", [m for m, _ in result.failed])
        if retries:
            self.sqs.change_visibility(retries, timeouts)
        self._on_settled()

    def _release_after(self, message: ReceivedMessage, outcome: MessageOutcome) -> int:
        """Seconds until a message we keep becomes visible again, counting why we keep it."""
        queue = message.queue.name
        if outcome.status == Status.UNAVAILABLE:  # not its fault: back soon after the outage
            self.stats.add("unavailable", queue=queue)
            return self.options.outage_release
        if outcome.status == Status.DEFERRED:  # for a worker that has the handler
            self.stats.add("deferred", queue=queue)
            return self._defer_after(message)
        self.stats.add("malformed" if outcome.status == Status.MALFORMED else "failed", queue=queue)
        return self._backoff(message, outcome)

    def _defer_after(self, message: ReceivedMessage) -> int:
        """A message left for another release: soon at first, then doubling up to the visibility
        timeout, so a deploy whose old workers linger uses few of its receives (each counts
        towards the queue's `maxReceiveCount`)."""
        base = self.options.defer_release
        cap = max(base, self.options.visibility_timeout)
        return backoff_seconds(message.receive_count, base=base, cap=cap)

    def _backoff(self, message: ReceivedMessage, outcome: MessageOutcome) -> int:
        seconds = backoff_seconds(
            message.receive_count, base=self.options.backoff_base, cap=self.options.max_backoff
        )
        limit = message.queue.max_receive_count
        fate = (
            "it goes to the dead-letter queue on its next receive"
            if limit is not None and message.receive_count >= limit
            else f"retry in {seconds}s"
        )
        receives = f"{message.receive_count}/{limit}" if limit else str(message.receive_count)
        logger.warning(
            "s3tasks worker: message %s on %s %s (receive %s; %s): %s",
            message.message_id,
            message.queue.name,
            "is malformed" if outcome.status == Status.MALFORMED else "failed",
            receives,
            fate,
            outcome.error,
        )
        return seconds
