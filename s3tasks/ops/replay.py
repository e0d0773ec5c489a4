"""Replay from history: run a handler again, on purpose, for events it already handled.

A run is unique per (event, handler) and no delivery runs an ended run again: that is
exactly-once. A replay is the one explicit way past it. Under the run's row lock it starts an
ended run (`succeeded`, or `failed` for good) over: `replays` + 1, who and when, attempts from
0, the outcome it replaces kept in `previous_outcome`; then, still in that transaction, it
runs the handler (inline) or hands the run to Celery with a new task id (`resend_to_celery`).
A crash, or a broker refusing the task, rolls the whole replay back: the run keeps its old
outcome and no replay is counted.

Deliveries keep their exactly-once. During a Celery replay a duplicate delivery finds the new
task id and sends nothing, and a stale task of the previous round finds the run owned by
another task; after the replay a duplicate finds the run ended again. A run still in flight
(`pending`, `running`, `retrying`) is never replayed (that would be a second execution beside
the first): it is skipped. So two replays of one run at once: the second waits for the lock,
then (inline) runs it once more — two requests, two runs — or (Celery) finds it pending and
skips it as in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from s3tasks.conf import get_settings
from s3tasks.models import EventRecord, HandlerRun, RunState
from s3tasks.processing.dispatch import INLINE, local_handler
from s3tasks.processing.execution import (
    OUTCOME_FIELDS,
    TERMINAL_STATES,
    Attempt,
    report,
    run_claimed,
)
from s3tasks.processing.handoff import resend_to_celery
from s3tasks.text import ERROR_LIMIT, truncate

logger = logging.getLogger(__name__)

# replayed: ran and succeeded, or sent to Celery; failed: the replayed attempt failed, or its
# task could not be sent (then nothing changed); in_flight, no_handler, gone: left alone.
Verdict = Literal["replayed", "failed", "in_flight", "no_handler", "gone"]
StateFilter = Literal["failed", "succeeded", "all"]
STATE_FILTERS: tuple[StateFilter, ...] = ("failed", "succeeded", "all")

# What a replay writes on its run besides an attempt's outcome.
REPLAY_FIELDS = ["replays", "replayed_at", "replayed_by", "previous_outcome", "celery_task_id"]
CHUNK_SIZE = 500  # run ids read per query: memory stays flat however many runs match


@dataclass(frozen=True)
class ReplayOutcome:
    """What replaying one run did; `state` is the run's state afterwards."""

    run_id: int
    handler_name: str
    verdict: Verdict
    state: str = ""
    error: str = ""


@dataclass
class ReplayReport:
    """The outcomes of many replays, counted by verdict (and `sent`: left pending in Celery)."""

    counts: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: ReplayOutcome) -> None:
        self.counts[outcome.verdict] = self.count(outcome.verdict) + 1
        if outcome.verdict == "replayed" and outcome.state != RunState.SUCCEEDED:
            self.sent += 1
        if outcome.error and len(self.errors) < 20:
            self.errors.append(f"run {outcome.run_id}: {outcome.error}")

    def count(self, verdict: Verdict) -> int:
        return self.counts.get(verdict, 0)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def skipped(self) -> int:
        return self.count("in_flight") + self.count("no_handler") + self.count("gone")


def select_runs(
    handler_name: str | None = None,
    *,
    state: StateFilter = "failed",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[HandlerRun]:
    """The runs to replay: of `handler_name`, in `state` (`all`: every state, so runs in flight
    are counted and skipped), whose event was received in [since, until)."""
    runs = HandlerRun.objects.all()
    if handler_name is not None:
        runs = runs.filter(handler_name=handler_name)
    if state != "all":
        runs = runs.filter(state=state)
    if since is not None:
        runs = runs.filter(event__received_at__gte=since)
    if until is not None:
        runs = runs.filter(event__received_at__lt=until)
    return runs


def run_id_chunks(runs: QuerySet[HandlerRun], size: int = CHUNK_SIZE) -> Iterator[list[int]]:
    """The ids of `runs` in ascending chunks (keyset paging): a replayed run that still
    matches is not met again."""
    after = 0
    while True:
        ids = list(runs.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids
        after = ids[-1]


def replay_runs(
    runs: QuerySet[HandlerRun],
    *,
    mode: str | None = None,
    by: str = "",
    progress: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """Replay every run of `runs`, one transaction each; `progress` is called after each."""
    result = ReplayReport()
    for ids in run_id_chunks(runs):
        for run_id in ids:
            result.add(replay_run(run_id, mode=mode, by=by))
            if progress is not None:
                progress(result)
    return result


def replay_run(run_id: int, *, mode: str | None = None, by: str = "") -> ReplayOutcome:
    """Start run `run_id` over and run it (inline) or send it to Celery, if it has ended."""
    mode = mode or get_settings().DISPATCH
    attempt: Attempt | None = None
    with transaction.atomic():
        run = HandlerRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return ReplayOutcome(run_id, "", "gone")
        name = run.handler_name
        if run.state not in TERMINAL_STATES:
            return ReplayOutcome(run_id, name, "in_flight", run.state)
        handler = local_handler(name)
        if handler is None:
            error = f"handler {name!r} is not registered in this process"
            return ReplayOutcome(run_id, name, "no_handler", run.state, error)
        event = EventRecord.objects.get(pk=run.event_id).to_event()
        _start_over(run, by)
        if mode == INLINE:
            attempt = run_claimed(run, handler, event, _fails_for_good)
            run.save(update_fields=[*OUTCOME_FIELDS, *REPLAY_FIELDS])
        else:
            run.save(update_fields=[*OUTCOME_FIELDS, *REPLAY_FIELDS])
            sent = resend_to_celery(run, handler, event)
            # eager Celery ran it here: a failure is the handler's, recorded and kept
            if sent.error and not sent.permanent:  # the broker refused: undo the whole replay
                transaction.set_rollback(True)
                return ReplayOutcome(run_id, name, "failed", "", f"not replayed: {sent.error}")
    if attempt is not None:
        report(attempt, name, event)
        if attempt.exception is not None:
            return ReplayOutcome(run_id, name, "failed", run.state, run.error)
        return ReplayOutcome(run_id, name, "replayed", run.state)
    if sent.error:
        return ReplayOutcome(run_id, name, "failed", RunState.FAILED, sent.error)
    return ReplayOutcome(run_id, name, "replayed", sent.state)


def _fails_for_good(run: HandlerRun, exc: BaseException) -> tuple[str, bool]:
    """An inline replay has no message behind it to redeliver: one attempt, then `failed`
    (replay it again to try again)."""
    return RunState.FAILED, True


def _start_over(run: HandlerRun, by: str) -> None:
    """Make an ended run a fresh one, counted as a replay, the old outcome kept and logged."""
    run.previous_outcome = previous_outcome(run)
    logger.info(
        "s3tasks: replaying %s on event %s (run %s, replay %d); it was %s",
        run.handler_name,
        run.event_id,
        run.pk,
        run.replays + 1,
        run.previous_outcome,
        extra={"handler": run.handler_name, "run_id": run.pk, "outcome": "replay"},
    )
    run.replays += 1
    run.replayed_at = timezone.now()
    run.replayed_by = by[:150]
    run.state = RunState.PENDING
    run.attempts = 0
    run.started_at = run.finished_at = run.duration_ms = None
    run.error = run.traceback = run.result_summary = ""
    run.celery_task_id = ""
    run.lease_expires_at = None


def previous_outcome(run: HandlerRun) -> str:
    """One line: how the run ended (state, attempts, when) and its error or result."""
    when = run.finished_at.isoformat(timespec="seconds") if run.finished_at else "never"
    text = f"{run.state} after {run.attempts} attempt(s), finished {when}"
    detail = run.error or run.result_summary
    return truncate(f"{text}: {detail}" if detail else text, ERROR_LIMIT)
