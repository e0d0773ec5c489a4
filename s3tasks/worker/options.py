"""`WorkerOptions`: every knob of the worker loop, validated once (flags beat settings)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from s3tasks.conf import DISPATCH_MODES, get_settings
from s3tasks.worker.sqs import MAX_VISIBILITY_TIMEOUT, SQS_BATCH_LIMIT


@dataclass(frozen=True)
class WorkerOptions:
    """How one `sqs_worker` process consumes; defaults come from `S3TASKS["WORKER"]`."""

    concurrency: int = 4
    batch_size: int = 10
    wait_time: int = 20
    visibility_timeout: int = 60
    shutdown_timeout: float = 30.0
    stats_interval: float = 60.0
    heartbeat_file: str = ""
    max_backoff: int = 900
    backoff_base: float = 5.0
    dispatch: str | None = None  # None = S3TASKS["DISPATCH"]
    max_messages: int | None = None
    once: bool = False
    exit_when_idle: float | None = None
    outbox_interval: float = 5.0
    receive_error_backoff: float = 1.0  # first pause after a failed receive; doubles up to 30 s

    @classmethod
    def from_settings(cls, **overrides: Any) -> WorkerOptions:
        """Options from `S3TASKS`, with non-None `overrides` (command-line flags) on top."""
        conf = get_settings()
        worker = conf.WORKER
        base = cls(
            concurrency=worker.CONCURRENCY,
            batch_size=worker.BATCH_SIZE,
            wait_time=worker.WAIT_TIME,
            visibility_timeout=worker.VISIBILITY_TIMEOUT,
            shutdown_timeout=float(worker.SHUTDOWN_TIMEOUT),
            stats_interval=float(worker.STATS_INTERVAL),
            heartbeat_file=worker.HEARTBEAT_FILE,
            max_backoff=worker.MAX_BACKOFF,
            backoff_base=float(conf.RETRY_BACKOFF),
        )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"Unknown worker option(s) {unknown}; valid ones are {sorted(known)}.")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **chosen).validated()

    def validated(self) -> WorkerOptions:
        """Return self, or raise `ValueError` naming the flag and its allowed range."""
        checks = [
            (self.concurrency >= 1, "--concurrency must be at least 1"),
            (1 <= self.batch_size <= SQS_BATCH_LIMIT, "--batch-size must be 1..10 (SQS limit)"),
            (0 <= self.wait_time <= 20, "--wait-time must be 0..20 seconds (SQS long polling)"),
            (
                1 <= self.visibility_timeout <= MAX_VISIBILITY_TIMEOUT,
                "--visibility-timeout must be 1..43200 seconds",
            ),
            (self.shutdown_timeout >= 0, "--shutdown-timeout must be 0 or more seconds"),
            (self.stats_interval > 0, "--stats-interval must be more than 0 seconds"),
            (0 <= self.max_backoff <= MAX_VISIBILITY_TIMEOUT, "--max-backoff must be 0..43200"),
            (self.max_messages is None or self.max_messages >= 1, "--max-messages must be >= 1"),
            (
                self.exit_when_idle is None or self.exit_when_idle >= 0,
                "--exit-when-idle must be 0 or more seconds",
            ),
            (
                self.dispatch is None or self.dispatch in DISPATCH_MODES,
                f"--dispatch must be one of {', '.join(DISPATCH_MODES)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    @property
    def heartbeat_interval(self) -> float:
        """How often in-flight visibility is checked: a few times per visibility timeout."""
        return max(0.2, min(5.0, self.visibility_timeout / 4))
