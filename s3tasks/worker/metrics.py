"""Prometheus metrics of one `sqs_worker` (`--metrics-port`, docs/metrics.md).

Its counters per queue come from `WorkerStats` (this module observes it), what it holds and
whether it is receiving are read at each scrape, and its queues' depth is polled with
`GetQueueAttributes` every `--metrics-poll` seconds. Handler runs are counted from the
lifecycle signals (`s3tasks.ops.metrics.runs`), as in Celery workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from s3tasks import __version__
from s3tasks.ops.metrics.prometheus import (
    MetricsServer,
    PrometheusMetrics,
    record_runs,
    start_metrics_server,
)
from s3tasks.worker.loop import Consumer
from s3tasks.worker.periodic import Periodic
from s3tasks.worker.sqs import QueueDepth, QueueRef, ReceivedMessage

logger = logging.getLogger("s3tasks.worker")

# WorkerStats counters → the `outcome` of s3tasks_messages_finished_total
FINISHED = frozenset(
    {"handled", "failed", "failed_permanently", "deferred", "unavailable", "malformed", "released"}
)


class WorkerMetrics:
    """Feeds one consumer's figures into `PrometheusMetrics` (a `StatsObserver`)."""

    def __init__(
        self,
        consumer: Consumer,
        metrics: PrometheusMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._ages_seen: dict[str, float] = {}  # oldest age at receipt since the last poll
        self._ages: dict[str, float] = {}  # the gauge's value per queue
        self._last_poll: float | None = None
        self._dead_letter_urls: dict[str, str] = {}
        self._failing: set[str] = set()
        self._counters = {
            "received": metrics.received,
            "deleted": metrics.deleted,
            "delete_failed": metrics.delete_failures,
            "extended": metrics.extended,
            "receive_errors": metrics.receive_errors,
            "events": metrics.events,
        }

    def attach(self) -> None:
        """Observe the consumer's counts and read what it holds at each scrape."""
        consumer, metrics = self.consumer, self.metrics
        consumer.stats.observe(self)
        names = [q.name for q in consumer.queues]
        metrics.info.labels(__version__, ",".join(names), consumer.options.dispatch or "").set(1)
        metrics.concurrency.set(consumer.options.concurrency)
        metrics.outage.set_function(lambda: 0.0 if consumer.gate.is_open else 1.0)
        for name in names:
            metrics.in_flight.labels(name).set_function(
                lambda name=name: sum(m.queue.name == name for m in consumer.inflight.messages())
            )

    # --- StatsObserver -----------------------------------------------------------------------

    def counted(self, name: str, queue: str, amount: int) -> None:
        if name in FINISHED:
            self.metrics.finished.labels(queue, name).inc(amount)
        elif name in self._counters:
            self._counters[name].labels(queue).inc(amount)

    def received(self, queue: QueueRef, messages: Sequence[ReceivedMessage]) -> None:
        now = self._clock()
        ages = [now - sent for sent in map(sent_at, messages) if sent is not None]
        if ages:
            with self._lock:
                self._ages_seen[queue.name] = max(ages + [self._ages_seen.get(queue.name, 0.0)])

    # --- the poll ----------------------------------------------------------------------------

    def poll(self) -> None:
        """Read each queue's and dead-letter queue's depth; update the oldest-age estimate."""
        now = self._clock()
        for queue in self.consumer.queues:
            depth = self._depth(queue.name, queue.url)
            if depth is not None:
                self._set_depth(self.metrics.queue_messages, depth, queue.name)
            self._update_age(queue.name, depth, now)
            dead_letter = self._dead_letter_url(queue)
            if dead_letter:
                name = dead_letter.rstrip("/").rsplit("/", 1)[-1]
                dlq_depth = self._depth(queue.name, dead_letter)
                if dlq_depth is not None:
                    self._set_depth(self.metrics.dead_letter_messages, dlq_depth, queue.name, name)
        self._last_poll = now

    def _update_age(self, queue: str, depth: QueueDepth | None, now: float) -> None:
        """The age gauge: the oldest age at receipt seen since the last poll; else 0 when
        nothing is waiting; else, while messages wait and this worker takes none, the last
        value growing with the time since (docs/metrics.md)."""
        with self._lock:
            seen = self._ages_seen.pop(queue, None)
            if seen is not None:
                age = seen
            elif depth is None:  # unknown: keep the value
                age = self._ages.get(queue, 0.0)
            elif depth.visible == 0:
                age = 0.0
            else:
                since = now - self._last_poll if self._last_poll is not None else 0.0
                age = self._ages.get(queue, 0.0) + since
            self._ages[queue] = age
        self.metrics.oldest_age.labels(queue).set(age)

    def _depth(self, queue: str, url: str) -> QueueDepth | None:
        try:
            depth = self.consumer.sqs.depth(url)
        except Exception as exc:
            self.metrics.poll_errors.labels(queue).inc()
            log = logger.debug if url in self._failing else logger.warning
            self._failing.add(url)
            log("s3tasks worker: could not read the depth of %s for metrics: %s", url, exc)
            return None
        self._failing.discard(url)
        return depth

    def _dead_letter_url(self, queue: QueueRef) -> str:
        if not queue.dead_letter_arn:
            return ""
        if queue.name not in self._dead_letter_urls:
            try:
                url = self.consumer.sqs.url_of_arn(queue.dead_letter_arn)
            except Exception as exc:
                self.metrics.poll_errors.labels(queue.name).inc()
                logger.warning(
                    "s3tasks worker: cannot find dead-letter queue %s for metrics: %s",
                    queue.dead_letter_arn,
                    exc,
                )
                return ""
            self._dead_letter_urls[queue.name] = url
        return self._dead_letter_urls[queue.name]

    @staticmethod
    def _set_depth(gauge: Any, depth: QueueDepth, *labels: str) -> None:
        for state in QueueDepth.ATTRIBUTES:
            gauge.labels(*labels, state).set(getattr(depth, state))


def sent_at(message: ReceivedMessage) -> float | None:
    """When SQS accepted the message (its `SentTimestamp`, epoch ms), in epoch seconds."""
    value = message.attributes.get("SentTimestamp")
    try:
        return int(value) / 1000 if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass
class RunningMetrics:
    """The `/metrics` server and the queue poller of a worker; `close` stops both."""

    server: MetricsServer
    poller: Periodic

    def close(self) -> None:
        self.poller.stop()
        self.server.close()


def start_worker_metrics(
    consumer: Consumer, port: int, addr: str, poll_interval: float
) -> RunningMetrics:
    """Count `consumer`'s work and its handler runs, poll its queues, serve `/metrics`.

    Raises `ImproperlyInstalled` without prometheus_client, `OSError` if the port is taken.
    """
    metrics = record_runs()
    worker_metrics = WorkerMetrics(consumer, metrics)
    worker_metrics.attach()
    worker_metrics.poll()  # the queue gauges are there for the first scrape
    server = start_metrics_server(port, addr, registry=metrics.registry)
    poller = Periodic("s3tasks-metrics-poll", poll_interval, worker_metrics.poll)
    poller.start()
    logger.info(
        "s3tasks worker: serving metrics on http://%s:%d/metrics (queues polled every %gs)",
        addr,
        server.port,
        poll_interval,
    )
    return RunningMetrics(server, poller)
