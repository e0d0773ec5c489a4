"""Prometheus metrics of the handler runs a Celery worker executes (`--dispatch celery`).

`serve_celery_metrics(port)`, called where the Celery app is created, makes each Celery worker
count its runs and serve them on `PORT/metrics` once it starts (Celery's `worker_init`).
With the prefork pool (Celery's default) the runs happen in child processes: set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory so prometheus_client keeps every child's
values in files there and the server, in the parent, adds them up (docs/metrics.md).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from s3tasks.ops.metrics.prometheus import (
    DEFAULT_ADDR,
    MULTIPROCESS_ENV,
    import_prometheus,
    multiprocess_dir,
    multiprocess_registry,
    record_runs,
    start_metrics_server,
)

logger = logging.getLogger(__name__)
_DISPATCH_UID = "s3tasks.ops.metrics.celery_workers"
FORKING_POOLS = ("prefork", "processes")


def serve_celery_metrics(port: int, addr: str = DEFAULT_ADDR) -> None:
    """When a Celery worker of this app starts, count its handler runs and serve them on
    `http://ADDR:PORT/metrics`. Processes that are not Celery workers are left alone."""
    import_prometheus()  # fail where it is called, naming the extra, not in the worker
    from celery import signals as celery_signals

    def start(sender: Any = None, **kwargs: Any) -> None:
        start_celery_metrics(port, addr, pool=getattr(sender, "pool_cls", None))

    celery_signals.worker_init.connect(start, weak=False, dispatch_uid=_DISPATCH_UID)
    celery_signals.worker_process_shutdown.connect(
        _process_gone, weak=False, dispatch_uid=_DISPATCH_UID
    )


def start_celery_metrics(port: int, addr: str = DEFAULT_ADDR, *, pool: Any = None) -> Any:
    """Count runs from now on (forked pool processes inherit it) and start the server:
    reading `PROMETHEUS_MULTIPROC_DIR` when set, this process's own registry otherwise."""
    shared = multiprocess_dir()
    if shared is None and _forks(pool):
        logger.warning(
            "s3tasks: the Celery %s pool runs handlers in child processes, whose metrics this "
            "server cannot see; set %s to an empty directory before starting the worker "
            "(docs/metrics.md)",
            _pool_name(pool),
            MULTIPROCESS_ENV,
        )
    record_runs()
    registry = multiprocess_registry() if shared else None
    server = start_metrics_server(port, addr, registry=registry)
    logger.info(
        "s3tasks: serving Celery worker metrics on http://%s:%d/metrics%s",
        addr,
        server.port,
        f" (from {shared})" if shared else "",
    )
    return server


def _process_gone(**kwargs: Any) -> None:
    """A pool process exits: its live gauges stop counting (prometheus_client's advice)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def _forks(pool: Any) -> bool:
    return any(name in _pool_name(pool).lower() for name in FORKING_POOLS)


def _pool_name(pool: Any) -> str:
    if pool is None or isinstance(pool, str):
        return pool or "prefork"  # Celery's default
    return f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', '')}"
