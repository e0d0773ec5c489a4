"""Recovery of stuck runs: a run handed off and not finished by the end of its lease.

A run handed to Celery gets a lease (`S3TASKS["RUN_LEASE"]` seconds, plus the retry delay for
a retrying run). Its SQS message is already deleted, so if the broker loses the task, or a
Celery worker dies in a way that loses it, nothing else would ever run it. Recovery finds
runs past their lease and drives them again: re-sent to Celery (or run inline), under the
same row lock and exactly-once claim as any delivery, so a run that finishes meanwhile is
left alone and a slow original task that shows up later finds the run done.

Called by each `sqs_worker`'s timer, by `manage.py s3tasks_recover` and by an admin action.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from s3tasks.conf import get_settings
from s3tasks.models import HandlerRun, RunState
from s3tasks.processing.dispatch import INLINE, local_handler, run_inline
from s3tasks.processing.execution import handler_backoff
from s3tasks.processing.handoff import resend_to_celery

logger = logging.getLogger(__name__)

Verdict = Literal["resent", "ran", "left_alone", "no_handler", "error"]
UNFINISHED = (RunState.PENDING, RunState.RUNNING, RunState.RETRYING)


@dataclass(frozen=True)
class StuckRun:
    """A run found past its lease (what `--dry-run` lists)."""

    run_id: int
    handler_name: str
    state: str
    attempts: int
    lease_expires_at: datetime | None
    bucket: str
    key: str


@dataclass
class RecoveryReport:
    """What one recovery pass found and did, by verdict."""

    found: list[StuckRun] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        return self.counts.get(verdict, 0)

    def add(self, verdict: Verdict) -> None:
        self.counts[verdict] = self.counts.get(verdict, 0) + 1

    @property
    def recovered(self) -> int:
        return self.count("resent") + self.count("ran")


def stuck_filter(older_than: float | None = None, now: datetime | None = None) -> Q:
    """Runs not finished whose lease has run out.

    With `older_than`, leases count as that many seconds long instead of `RUN_LEASE`: runs
    handed off at least `older_than` seconds ago. Runs handed off before leases existed (a
    task id, no lease) count from their creation.
    """
    now = now or timezone.now()
    lease = get_settings().RUN_LEASE
    span = lease if older_than is None else older_than
    expired = Q(lease_expires_at__lte=now + timedelta(seconds=lease - span))
    unleased = Q(lease_expires_at__isnull=True, created_at__lte=now - timedelta(seconds=span))
    return Q(state__in=UNFINISHED) & ~Q(celery_task_id="") & (expired | unleased)


def find_stuck_runs(*, older_than: float | None = None, limit: int = 100) -> list[StuckRun]:
    """Up to `limit` stuck runs, the longest overdue first."""
    rows = (
        HandlerRun.objects.filter(stuck_filter(older_than))
        .select_related("event")
        .order_by("lease_expires_at", "pk")[:limit]
    )
    return [
        StuckRun(
            r.pk,
            r.handler_name,
            r.state,
            r.attempts,
            r.lease_expires_at,
            r.event.bucket,
            r.event.key,
        )
        for r in rows
    ]


def recover_stuck_runs(
    *,
    older_than: float | None = None,
    limit: int = 100,
    dry_run: bool = False,
    mode: str | None = None,
) -> RecoveryReport:
    """Find up to `limit` stuck runs and (unless `dry_run`) drive each again."""
    report = RecoveryReport(found=find_stuck_runs(older_than=older_than, limit=limit))
    if not dry_run:
        drive_runs((r.run_id for r in report.found), report, older_than=older_than, mode=mode)
    if report.recovered:
        logger.warning(
            "s3tasks: recovered %d stuck run(s) past their lease (%d re-sent to Celery, %d run "
            "inline)",
            report.recovered,
            report.count("resent"),
            report.count("ran"),
        )
    return report


def drive_runs(
    run_ids: Iterable[int],
    report: RecoveryReport,
    *,
    older_than: float | None = None,
    mode: str | None = None,
) -> RecoveryReport:
    """Drive each run that is (still) stuck; count the rest as left alone."""
    mode = mode or get_settings().DISPATCH
    for run_id in run_ids:
        try:
            verdict = _drive(run_id, older_than, mode)
        except Exception as exc:  # one run's trouble never stops the others
            logger.exception("s3tasks: recovering run %s failed", run_id)
            report.errors.append(f"run {run_id}: {type(exc).__name__}: {exc}")
            verdict = "error"
        report.add(verdict)
    return report


def _drive(run_id: int, older_than: float | None, mode: str) -> Verdict:
    """Lock the run if it is still stuck and nobody holds it, then send or run it again."""
    with transaction.atomic():
        run = (
            HandlerRun.objects.select_for_update(skip_locked=True)
            .filter(stuck_filter(older_than), pk=run_id)
            .select_related("event")
            .first()
        )
        if run is None:  # finished meanwhile, or a worker is running it right now
            return "left_alone"
        handler = local_handler(run.handler_name)
        if handler is None:
            logger.warning(
                "s3tasks: stuck run %s needs handler %r, which this process does not have",
                run.pk,
                run.handler_name,
            )
            return "no_handler"
        event = run.event.to_event()
        if mode == INLINE:
            outcome = run_inline(run.pk, handler, event)
            if outcome.retryable:  # no message will bring it back: the next pass retries it
                retry_at = timezone.now() + timedelta(seconds=handler_backoff(run.attempts + 1))
                HandlerRun.objects.filter(pk=run.pk).update(lease_expires_at=retry_at)
            return "ran"
        outcome = resend_to_celery(run, handler, event)
    if not outcome.ok:
        raise RuntimeError(outcome.error)
    return "resent"
