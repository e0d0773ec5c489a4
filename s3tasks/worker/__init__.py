"""The SQS worker behind `manage.py sqs_worker`.

Read in this order: `sqs` (the thin SQS layer), `options`, `loop` (the consumer), `acker`
(its finishing side), `inflight`/`stats`/`periodic` (its helpers), `runner` (wiring to
models and settings), `metrics` (its Prometheus figures, with `--metrics-port`).
`memory_sqs` is an instant in-memory SQS stand-in for tests and benchmarks.
"""

from s3tasks.worker.loop import Consumer
from s3tasks.worker.options import WorkerOptions
from s3tasks.worker.runner import QueueSelectionError, build_consumer, resolve_queues
from s3tasks.worker.sqs import QueueRef, ReceivedMessage, SqsQueueClient
from s3tasks.worker.stats import StatsSnapshot, WorkerStats

__all__ = [
    "Consumer",
    "QueueRef",
    "QueueSelectionError",
    "ReceivedMessage",
    "SqsQueueClient",
    "StatsSnapshot",
    "WorkerOptions",
    "WorkerStats",
    "build_consumer",
    "resolve_queues",
]
