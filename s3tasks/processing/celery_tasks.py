"""Each handler's Celery task: made here, in the layer that runs handlers, and handed to the
registry (`use_task_factory`) when the app is ready, so `Handler.task` works everywhere.

Celery is imported on first use only: importing it costs ~250 ms, which a Lambda cold start
that runs handlers inline should not pay.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from s3tasks.processing.execution import execute_celery_run
from s3tasks.rules.registry import registry, use_task_factory

_tasks: dict[str, Any] = {}


def celery_task(name: str) -> Any:
    """The Celery task running handler `name` (made once per process)."""
    task = _tasks.get(name)
    if task is None:
        task = _tasks[name] = _make_celery_task(name)
    return task


def _make_celery_task(name: str) -> Any:
    """The Celery task that runs this handler in a worker (JSON arguments, never pickle)."""
    from celery import shared_task

    def run_handler(task: Any, event_data: dict[str, Any], run_id: int | None = None) -> Any:
        return execute_celery_run(task, name, event_data, run_id)

    # Celery builds a signature from the function's name: keep it a valid identifier even for
    # handler names such as "reports.nightly-export".
    run_handler.__name__ = re.sub(r"\W|^(?=\d)", "_", name.rsplit(".", 1)[-1])
    # acks_late: a Celery worker that dies mid-task leaves the task on the broker for another
    # worker; the run's exactly-once claim makes that redelivery safe. No Celery retry limit:
    # the run's attempts decide when a handler gives up (`max_retries`), and an unreachable
    # database or broker is retried without using any of them.
    options: dict[str, Any] = {
        "name": name,
        "bind": True,
        "serializer": "json",
        "acks_late": True,
        "reject_on_worker_lost": True,
        "max_retries": None,
    }
    return shared_task(**options)(run_handler)


def install() -> None:
    """Make `Handler.task` work, and register the tasks of handlers already imported when a
    Celery worker is starting (it must know every task name before a message arrives)."""
    use_task_factory(celery_task)
    if "celery" in sys.modules:
        for handler in registry:
            celery_task(handler.name)
