"""A real Celery worker subprocess on Redis, and this process sending to it (not eager);
waiting for a run to reach a state; `SentTasks`, a broker stand-in that records sends."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

from s3tasks.models import HandlerRun
from tests.conftest import REDIS_URL, ROOT, subprocess_env


@contextlib.contextmanager
def sending_to_redis(broker_url: str = REDIS_URL) -> Iterator[str]:
    """Point this process's Celery app at the test Redis, or at `broker_url` (not eager);
    restore it after."""
    from project.celery import app

    saved = {"broker_url": app.conf.broker_url, "task_always_eager": app.conf.task_always_eager}
    _use_broker(app, broker_url=broker_url, task_always_eager=False)
    try:
        yield broker_url
    finally:
        _use_broker(app, **saved)


def _use_broker(app, **conf) -> None:
    app.conf.update(**conf)
    app._pool = None  # producer pools are cached per broker URL
    app.amqp._producer_pool = None


@contextlib.contextmanager
def celery_worker(settings_module: str, queues: str, out: IO[bytes]) -> Iterator[subprocess.Popen]:
    """A solo-pool worker importing `tests.handlers_for_dispatch`, stopped (SIGTERM) after."""
    env = subprocess_env(CELERY_BROKER_URL=REDIS_URL, DJANGO_SETTINGS_MODULE=settings_module)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "project", "worker", "--pool=solo", "-c", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
         "-Q", queues, "-I", "tests.handlers_for_dispatch"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {check.__doc__}")
        time.sleep(0.1)


def run_in_state(run_id: int, *states: str) -> Callable[[], bool]:
    def check() -> bool:
        """the run to reach the expected state"""
        return HandlerRun.objects.get(pk=run_id).state in states

    return check


class SentTasks:
    """Stands in for the broker: records `apply_async` calls of one handler's task."""

    def __init__(self, monkeypatch, handler_name: str, delay: float = 0.0) -> None:
        from s3tasks.rules.registry import registry

        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.delay = delay
        monkeypatch.setattr(registry.get(handler_name).task, "apply_async", self.apply_async)

    def apply_async(self, args=None, kwargs=None, **options):
        time.sleep(self.delay)
        with self.lock:
            self.calls.append({"args": args, **options})
