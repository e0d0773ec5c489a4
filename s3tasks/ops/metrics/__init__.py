"""Metrics of s3tasks (docs/metrics.md).

- `runs`: each finished handler attempt as a `RunObservation`, from s3tasks' own signals, with
  the event lag (S3 `eventTime` → run finished); the source every sink reads.
- `prometheus`: every Prometheus metric in one registry created on first use, and the
  `/metrics` server (`sqs_worker --metrics-port`, needs `pip install 's3tasks[metrics]'`).
- `celery_workers`: `serve_celery_metrics(port)` for the runs Celery workers execute.
- `emf`: the Lambda entrypoint's CloudWatch Embedded Metric Format lines (no dependency).

The worker's own counters and queue gauges are wired in `s3tasks.worker.metrics`.
"""

from s3tasks.ops.metrics.celery_workers import serve_celery_metrics, start_celery_metrics
from s3tasks.ops.metrics.prometheus import (
    PrometheusMetrics,
    prometheus_metrics,
    record_runs,
    start_metrics_server,
)
from s3tasks.ops.metrics.runs import RunObservation, event_lag_seconds

__all__ = [
    "PrometheusMetrics",
    "RunObservation",
    "event_lag_seconds",
    "prometheus_metrics",
    "record_runs",
    "serve_celery_metrics",
    "start_celery_metrics",
    "start_metrics_server",
]
