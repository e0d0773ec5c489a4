"""Imported by the Celery worker of tests/test_metrics_http.py (`-I`), as a project's Celery
module would call it: serve the worker's metrics on `S3TASKS_TEST_METRICS_PORT` (0: any)."""

import os

from s3tasks.ops.metrics import serve_celery_metrics

serve_celery_metrics(int(os.environ["S3TASKS_TEST_METRICS_PORT"]), "127.0.0.1")
