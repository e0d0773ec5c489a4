"""Settings for the Celery worker subprocess of the dispatch tests: the example project with a
one-second retry backoff so a failing handler exhausts its retries within a test."""

from project.settings import *  # noqa: F403
from project.settings import S3TASKS

S3TASKS = {**S3TASKS, "RETRY_BACKOFF": 1}
