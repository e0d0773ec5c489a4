"""s3tasks' Prometheus metrics: every metric in one registry, created on first use.

`prometheus_client` is an optional dependency (`pip install 's3tasks[metrics]'`); nothing
imports it until metrics are asked for. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from s3tasks.exceptions import ImproperlyInstalled
from s3tasks.ops.metrics.runs import RunObservation, add_sink

DEFAULT_ADDR = "0.0.0.0"  # scrapers come from another host (docs/metrics.md, "Serving")
# From a fast pipeline (tens of ms) to an hour-long backlog.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def import_prometheus() -> ModuleType:
    """`prometheus_client`, or `ImproperlyInstalled` naming the extra that installs it."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImproperlyInstalled("prometheus_client", "metrics", "Prometheus metrics") from exc
    return prometheus_client


class PrometheusMetrics:
    """Every s3tasks metric, registered in `registry` (with the process collectors)."""

    def __init__(self, prometheus: ModuleType) -> None:
        registry = prometheus.CollectorRegistry()
        self.registry = registry
        prometheus.ProcessCollector(registry=registry)
        prometheus.PlatformCollector(registry=registry)
        prometheus.GCCollector(registry=registry)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
            return prometheus.Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = (), **kwargs: Any) -> Any:
            return prometheus.Gauge(name, doc, labels, registry=registry, **kwargs)

        # handler runs: wherever a handler runs (sqs_worker inline, Celery workers)
        self.runs = counter(
            "s3tasks_handler_runs_total",
            "Finished handler attempts by outcome: succeeded, retrying (failed, will be "
            "retried) or failed (for good).",
            ("handler", "outcome"),
        )
        self.duration = prometheus.Histogram(
            "s3tasks_handler_duration_seconds",
            "How long each handler attempt ran.",
            ("handler",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.lag = prometheus.Histogram(
            "s3tasks_event_lag_seconds",
            "From the S3 change (eventTime) to the end of its handler's run.",
            ("handler",),
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        # the worker's messages, per queue
        self.received = counter(
            "s3tasks_messages_received_total", "Messages received from SQS.", ("queue",)
        )
        self.finished = counter(
            "s3tasks_messages_finished_total",
            "Messages the worker finished with, by outcome (handled, failed, "
            "failed_permanently, deferred, unavailable, malformed, released).",
            ("queue", "outcome"),
        )
        self.deleted = counter(
            "s3tasks_messages_deleted_total", "Messages deleted from SQS.", ("queue",)
        )
        self.delete_failures = counter(
            "s3tasks_message_delete_failures_total",
            "Deletes SQS refused (the message comes back and is deduplicated).",
            ("queue",),
        )
        self.extended = counter(
            "s3tasks_message_visibility_extensions_total",
            "Visibility timeouts extended for long handlers.",
            ("queue",),
        )
        self.receive_errors = counter(
            "s3tasks_receive_errors_total", "ReceiveMessage calls that failed.", ("queue",)
        )
        self.events = counter(
            "s3tasks_events_total",
            "S3 events in the messages the worker finished (a redelivery counts again).",
            ("queue",),
        )
        self.in_flight = gauge(
            "s3tasks_messages_in_flight", "Messages this worker holds now.", ("queue",)
        )
        self.concurrency = gauge("s3tasks_worker_concurrency", "Messages it may hold at once.")
        self.outage = gauge(
            "s3tasks_worker_outage",
            "1 while the worker stopped receiving because the database or broker is down.",
        )
        self.info = gauge(
            "s3tasks_worker_info",
            "Always 1; the labels say what this worker runs.",
            ("version", "queues", "dispatch"),
        )
        # the queues, polled with GetQueueAttributes
        self.queue_messages = gauge(
            "s3tasks_queue_messages",
            "Messages in a consumed queue by state (visible, in_flight, delayed).",
            ("queue", "state"),
            multiprocess_mode="mostrecent",
        )
        self.dead_letter_messages = gauge(
            "s3tasks_dead_letter_queue_messages",
            "Messages in a consumed queue's dead-letter queue by state.",
            ("queue", "dead_letter_queue", "state"),
            multiprocess_mode="mostrecent",
        )
        self.oldest_age = gauge(
            "s3tasks_queue_oldest_message_age_seconds",
            "Estimated age of the oldest message waiting in the queue (docs/metrics.md).",
            ("queue",),
            multiprocess_mode="mostrecent",
        )
        self.poll_errors = counter(
            "s3tasks_queue_poll_errors_total",
            "GetQueueAttributes calls that failed (the queue gauges keep their last value).",
            ("queue",),
        )

    def record_run(self, seen: RunObservation) -> None:
        """A sink for `runs.add_sink`: count the attempt, observe its duration and lag."""
        self.runs.labels(seen.handler, seen.outcome).inc()
        if seen.duration_seconds is not None:
            self.duration.labels(seen.handler).observe(seen.duration_seconds)
        if seen.lag_seconds is not None:
            self.lag.labels(seen.handler).observe(seen.lag_seconds)


_metrics: PrometheusMetrics | None = None
_metrics_lock = threading.Lock()


def prometheus_metrics() -> PrometheusMetrics:
    """The process's `PrometheusMetrics`, created on first call."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = PrometheusMetrics(import_prometheus())
        return _metrics


def record_runs() -> PrometheusMetrics:
    """Count this process's handler runs in Prometheus from now on."""
    metrics = prometheus_metrics()
    add_sink(metrics.record_run)
    return metrics


def multiprocess_dir() -> str | None:
    """`PROMETHEUS_MULTIPROC_DIR` when set: prometheus_client then keeps values in files there."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def multiprocess_registry() -> Any:
    """A registry that reads every process's files in `PROMETHEUS_MULTIPROC_DIR`."""
    prometheus = import_prometheus()
    from prometheus_client import multiprocess

    registry = prometheus.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


@dataclass
class MetricsServer:
    """The `/metrics` HTTP server on its own daemon thread."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when started with port 0)."""
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(
    port: int, addr: str = DEFAULT_ADDR, *, registry: Any = None
) -> MetricsServer:
    """Serve `registry` (default: s3tasks' own) on `http://ADDR:PORT/metrics`; port 0 picks a
    free one. Raises `OSError` when the address is taken."""
    prometheus = import_prometheus()
    served = registry if registry is not None else prometheus_metrics().registry
    server, thread = prometheus.start_http_server(port, addr, registry=served)
    return MetricsServer(server, thread)
