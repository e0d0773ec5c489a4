"""`WorkerOptions`: every knob of the worker loop, validated once (flags beat settings)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from s3tasks.conf import DISPATCH_MODES, S3TasksSettings, WorkerSettings, get_settings
from s3tasks.worker.sqs import MAX_VISIBILITY_TIMEOUT, SQS_BATCH_LIMIT

# Options that count things or SQS seconds: a fraction would crash `range()` or SQS calls.
WHOLE_NUMBERS = (
    "concurrency",
    "batch_size",
    "wait_time",
    "visibility_timeout",
    "max_backoff",
    "max_messages",
    "outage_release",
    "defer_release",
)


@dataclass(frozen=True)
class WorkerOptions:
    """How one `sqs_worker` process consumes; defaults come from `S3TASKS["WORKER"]`."""

    # The defaults are S3TASKS["WORKER"]'s, so they are written down once (in `conf`).
    concurrency: int = WorkerSettings.CONCURRENCY
    batch_size: int = WorkerSettings.BATCH_SIZE
    wait_time: int = WorkerSettings.WAIT_TIME
    visibility_timeout: int = WorkerSettings.VISIBILITY_TIMEOUT
    shutdown_timeout: float = WorkerSettings.SHUTDOWN_TIMEOUT
    stats_interval: float = WorkerSettings.STATS_INTERVAL
    heartbeat_file: str = ""
    max_backoff: int = WorkerSettings.MAX_BACKOFF
    backoff_base: float = S3TasksSettings.RETRY_BACKOFF
    dispatch: str | None = None  # None = S3TASKS["DISPATCH"]
    max_messages: int | None = None
    once: bool = False
    exit_when_idle: float | None = None
    outbox_interval: float = 5.0
    receive_error_backoff: float = 1.0  # first pause after a failed receive; doubles up to 30 s
    recovery_interval: float = S3TasksSettings.RECOVERY_INTERVAL  # 0 = never
    cleanup_interval: float = S3TasksSettings.CLEANUP_INTERVAL  # 0 = never
    outage_release: int = 10  # visibility of messages released while a service is down
    defer_release: int = 2  # visibility of messages left for a worker that has the handler

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
            recovery_interval=float(conf.RECOVERY_INTERVAL),
            cleanup_interval=float(conf.CLEANUP_INTERVAL),
        )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"Unknown worker option(s) {unknown}; valid ones are {sorted(known)}.")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **chosen).validated()

    def validated(self) -> WorkerOptions:
        """Return self, or raise `ValueError` naming the flag and its allowed range."""
        for name in WHOLE_NUMBERS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a whole number, not {value!r}")
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
