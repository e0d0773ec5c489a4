"""`WorkerPresence`: a running worker's row in `WorkerHeartbeat`, for the admin's dashboard.

The consumer calls `beat()` when it starts and every `interval` seconds while the database is
up (never during an outage: see `loop.Consumer`), and `leave()` on a clean shutdown. A worker
that dies leaves its row behind; the dashboard shows it as gone once it is
`GONE_AFTER_BEATS` intervals old, and each beat of a live worker deletes rows gone for longer
than `PRUNE_GONE_AFTER`. Writing the row must never stop the worker: a failure is logged.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import asdict

from django.db import close_old_connections
from django.utils import timezone

from s3tasks import __version__
from s3tasks.models.worker import PRUNE_GONE_AFTER, WorkerHeartbeat
from s3tasks.worker.stats import StatsSnapshot

logger = logging.getLogger("s3tasks.worker")

HEARTBEAT_INTERVAL = 15.0  # seconds between two writes of a worker's row


class WorkerPresence:
    """Keeps one worker process's `WorkerHeartbeat` row."""

    def __init__(
        self,
        queues: Sequence[str],
        dispatch: str,
        concurrency: int,
        *,
        interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.interval = interval
        self.worker_id = uuid.uuid4().hex
        self.started_at = timezone.now()
        self._identity = {
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "queues": list(queues),
            "version": __version__,
            "dispatch": dispatch,
            "concurrency": concurrency,
            "interval": interval,
        }

    def beat(self, snapshot: StatsSnapshot) -> None:
        """Write the row with the worker's counters now (created again if it was pruned)."""
        counters = {**asdict(snapshot), "elapsed": round(snapshot.elapsed, 1)}
        now = timezone.now()
        close_old_connections()
        try:
            rows = WorkerHeartbeat.objects.filter(worker_id=self.worker_id)
            if not rows.update(last_seen_at=now, counters=counters):
                WorkerHeartbeat.objects.create(
                    worker_id=self.worker_id,
                    started_at=self.started_at,
                    last_seen_at=now,
                    counters=counters,
                    **self._identity,
                )
            WorkerHeartbeat.objects.filter(last_seen_at__lt=now - PRUNE_GONE_AFTER).delete()
        except Exception as exc:  # the row is for people; the worker goes on without it
            logger.warning("s3tasks worker: could not write its heartbeat row: %s", exc)
        finally:
            close_old_connections()

    def leave(self) -> None:
        """Delete the row: this worker is stopping cleanly."""
        close_old_connections()
        try:
            WorkerHeartbeat.objects.filter(worker_id=self.worker_id).delete()
        except Exception as exc:
            logger.warning("s3tasks worker: could not delete its heartbeat row: %s", exc)
        finally:
            close_old_connections()
