"""Dispatch: record events, then run their handlers inline or hand them to Celery.

`dispatch_batch` is what the batch core (worker and Lambda) calls for every received batch;
`dispatch_event` is a batch of one. The bookkeeping is done per batch: one INSERT for the
batch's `EventRecord`s and one for its `HandlerRun`s (idempotent, see `records`), then

- `inline`: in ONE transaction, the runs that already existed are locked, every handler runs
  in its own savepoint, exactly once per (dedup key, handler), and all outcomes are written
  with one UPDATE. A process killed mid-batch commits nothing; the redelivery runs it again.
- `celery`: one transaction records the rows, the new runs already handed off (a task id
  each, and a lease); after the commit their tasks are published through one producer
  (`handoff.publish_handed_off`). A process dying between the commit and the publish leaves
  runs whose lease recovery finds (`s3tasks.ops.recovery`), as it finds a task the broker
  lost; a broker refusing a task gets its run's task id taken back, for the redelivery to
  send. Runs that existed without a task id are handed off under their row locks
  (`handoff.hand_off`). The task body (`celery_tasks.execute_celery_run`) claims the run
  the same exactly-once way and retries with exponential backoff.

A run that ended (`succeeded`, or `failed` for good) is never run again by a delivery. A
handler this process does not have is left alone for a process that has it (rolling deploys).
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from django.db import transaction

from s3tasks import signals
from s3tasks.conf import get_settings
from s3tasks.events import S3Event
from s3tasks.models import EventRecord, HandlerRun, RunState
from s3tasks.processing.execution import (
    OUTCOME_FIELDS,
    TERMINAL_STATES,
    Attempt,
    attempt_run,
    inline_policy,
    lease_deadline,
    report,
    run_claimed,
)
from s3tasks.processing.handoff import (
    HandOff,
    celery_queue_for,
    send_to_celery,
    send_when_committed,
)
from s3tasks.processing.outcomes import DispatchOutcome, RunOutcome, skipped_outcome
from s3tasks.processing.runs import RunKey, ensure_runs, record_events, update_rows
from s3tasks.rules.registry import Handler, registry
from s3tasks.rules.routing import Route, route

logger = logging.getLogger(__name__)

INLINE = "inline"
CELERY = "celery"


@dataclass(frozen=True)
class BatchItem:
    """One event to dispatch, where it came from, and its routes (None: `route(event)`).

    `redelivered`: its message was received before (SQS's ApproximateReceiveCount > 1), so
    the process that received it may have died between committing the runs and publishing
    their tasks: celery mode publishes the tasks of its runs still pending again, with the
    same task ids (a copy that was delivered after all finds its run done and runs nothing).
    """

    event: S3Event
    routes: Sequence[Route] | None = None
    message_id: str = ""
    queue_name: str = ""
    redelivered: bool = False


@dataclass(frozen=True)
class _Planned:
    """A batch item with its routes resolved and its rows looked up."""

    item: BatchItem
    routes: Sequence[Route]
    event_id: int
    record: EventRecord | None  # set on the first item of an event this batch recorded

    def run_keys(self) -> list[RunKey]:
        return [(self.event_id, r.handler_name) for r in self.routes]


def dispatch_event(
    event: S3Event,
    *,
    routes: Sequence[Route] | None = None,
    mode: str | None = None,
    message_id: str = "",
    queue_name: str = "",
) -> DispatchOutcome:
    """Record `event` and run (inline) or send (celery) every routed handler exactly once."""
    [outcome] = dispatch_batch([BatchItem(event, routes, message_id, queue_name)], mode=mode)
    return outcome


def dispatch_batch(items: Sequence[BatchItem], *, mode: str | None = None) -> list[DispatchOutcome]:
    """Dispatch every item exactly as `dispatch_event` would, one after the other, with the
    bookkeeping done once per batch; returns one outcome per item, in order.

    A handler failure fails only its own item. A database error (or a handler raising a
    `BaseException`) propagates, and in inline mode nothing of the batch is kept.
    """
    mode = mode or get_settings().DISPATCH
    if mode not in (INLINE, CELERY):
        raise ValueError(f"dispatch mode must be 'inline' or 'celery', not {mode!r}.")
    if not items:
        return []
    if mode == INLINE:
        return _dispatch_inline(items)
    return _dispatch_celery(items)


def _plan(
    items: Sequence[BatchItem], *, lock: bool, celery: bool = False
) -> tuple[list[_Planned], dict[RunKey, HandlerRun], dict[RunKey, str]]:
    """Write the event and run rows of a batch; with `lock`, lock the runs that existed.

    With `celery`, the runs created for handlers of this process are created handed off:
    a new task id each, their resolved Celery queue and a lease; returns those task ids.
    """
    routes = [list(i.routes) if i.routes is not None else route(i.event) for i in items]
    recorded = record_events((i.event, i.message_id, i.queue_name) for i in items)
    planned = []
    for item, item_routes in zip(items, routes, strict=True):
        key = item.event.dedup_key
        record = recorded.created.pop(key, None)  # pop: only the first item announces it
        planned.append(_Planned(item, item_routes, recorded.ids[key], record))
    if not celery:
        wanted = {(p.event_id, r.handler_name): r.celery_queue for p in planned for r in p.routes}
        return planned, ensure_runs(wanted, lock=lock), {}
    wanted, task_ids = {}, {}
    for p in planned:
        for r in p.routes:
            key = (p.event_id, r.handler_name)
            wanted[key] = celery_queue_for(r.celery_queue) or ""
            if local_handler(r.handler_name) is not None:
                task_ids.setdefault(key, str(uuid.uuid4()))
    runs = ensure_runs(wanted, lock=lock, task_ids=task_ids, lease=lease_deadline())
    return planned, runs, task_ids


def _announce(planned: _Planned) -> None:
    if planned.record is not None:
        signals.event_received.send(
            sender="s3tasks",
            event=planned.item.event,
            record=planned.record,
            message_id=planned.item.message_id,
        )


def _event_outcome(event_id: int, outcomes: tuple[RunOutcome, ...]) -> DispatchOutcome:
    failed = [o for o in outcomes if not o.ok]
    return DispatchOutcome(
        event_id=event_id,
        runs=outcomes,
        ok=not failed,
        permanent=bool(failed) and all(o.permanent for o in failed),
        error="; ".join(f"{o.handler_name}: {o.error}" for o in failed),
    )


def _outcome(attempt: Attempt) -> RunOutcome:
    run = attempt.run
    if attempt.skipped:
        return skipped_outcome(run)
    return RunOutcome(
        run.handler_name,
        run.pk,
        run.state,
        error=run.error if attempt.exception is not None else "",
        permanent=attempt.permanent,
        result=attempt.result,
        exception=attempt.exception,
    )


_deferred_names: set[str] = set()
_deferred_lock = threading.Lock()


def _deferred(run: HandlerRun) -> RunOutcome:
    """Leave `run` untouched for a process that has its handler (a rolling deploy)."""
    name = run.handler_name
    with _deferred_lock:
        first = name not in _deferred_names
        _deferred_names.add(name)
    if first:  # once per handler and process: a deploy must not flood the log
        logger.warning(
            "s3tasks: handler %r is routed to but not registered in this process (an older "
            "release during a deploy?); its events are left for a process that has it",
            name,
            extra={"handler": name, "run_id": run.pk, "outcome": "deferred"},
        )
    error = f"handler {name!r} is not registered in this process; left for one that has it"
    return RunOutcome(name, run.pk, run.state, error=error, deferred=True)


def local_handler(name: str) -> Handler | None:
    """The handler registered as `name` in this process, or None."""
    return registry.get(name) if name in registry else None


# --- inline -------------------------------------------------------------------------------


def _dispatch_inline(items: Sequence[BatchItem]) -> list[DispatchOutcome]:
    """The whole batch in one transaction: rows, claims, handlers (savepoints), outcomes."""
    attempts: list[tuple[Attempt, str, S3Event]] = []
    results = []
    with transaction.atomic():
        planned, runs, _ = _plan(items, lock=True)
        claimed: dict[int, HandlerRun] = {}
        for p in planned:
            _announce(p)
            outcomes = []
            for chosen, key in zip(p.routes, p.run_keys(), strict=True):
                run = runs[key]
                handler = local_handler(chosen.handler_name)
                if handler is None:
                    outcomes.append(_deferred(run))
                    continue
                if run.state in TERMINAL_STATES:
                    outcomes.append(skipped_outcome(run))
                    continue
                attempt = run_claimed(run, handler, p.item.event, inline_policy(handler))
                claimed[run.pk] = run
                # a snapshot: a duplicate later in the batch may attempt this run again
                attempt = replace(attempt, run=copy.copy(run))
                attempts.append((attempt, chosen.handler_name, p.item.event))
                outcomes.append(_outcome(attempt))
            results.append(_event_outcome(p.event_id, tuple(outcomes)))
        if claimed:
            update_rows(list(claimed.values()), OUTCOME_FIELDS)
    for attempt, handler_name, event in attempts:  # signals once the outcomes are committed
        report(attempt, handler_name, event)
    return results


def run_inline(run_id: int, handler: Handler, event: S3Event) -> RunOutcome:
    """Run the handler in this process; a failure is left for redelivery (or is permanent)."""
    return _outcome(attempt_run(run_id, handler, event, inline_policy(handler)))


# --- celery -------------------------------------------------------------------------------


def _dispatch_celery(items: Sequence[BatchItem]) -> list[DispatchOutcome]:
    """Record the batch's rows with its new runs already handed off (task ids and leases) in
    one transaction, then publish their tasks; runs that existed unsent go through `hand_off`.
    """
    with transaction.atomic():
        planned, runs, task_ids = _plan(items, lock=False, celery=True)
    created: dict[int, HandOff] = {}  # committed handed off: publish their tasks
    handoffs: dict[int, HandOff] = {}  # existed without a task id: hand off under lock
    decided: list[list[RunOutcome | int]] = []  # per item: an outcome, or a run to send
    for p in planned:
        row: list[RunOutcome | int] = []
        for chosen, key in zip(p.routes, p.run_keys(), strict=True):
            run = runs[key]
            handler = local_handler(chosen.handler_name)
            if handler is None:
                row.append(_deferred(run))
            elif run.pk in created or run.pk in handoffs:
                row.append(skipped_outcome(run))  # a duplicate of an event earlier in this batch
            elif (key in task_ids and run.celery_task_id == task_ids[key]) or (
                p.item.redelivered and run.state == RunState.PENDING and run.celery_task_id
            ):  # handed off by this call, or maybe never published by the one that died
                created[run.pk] = HandOff(run, handler, p.item.event, run.celery_queue or None)
                row.append(run.pk)
            elif run.state in TERMINAL_STATES or run.celery_task_id:
                row.append(skipped_outcome(run))  # done, or handed off by an earlier delivery
            else:
                queue = celery_queue_for(chosen.celery_queue)
                handoffs[run.pk] = HandOff(run, handler, p.item.event, queue)
                row.append(run.pk)
        decided.append(row)
    for p in planned:
        _announce(p)
    sent = send_when_committed(list(created.values()), list(handoffs.values()))
    return [
        _event_outcome(p.event_id, tuple(sent[o] if isinstance(o, int) else o for o in row))
        for p, row in zip(planned, decided, strict=True)
    ]


# --- admin: retry a failed run ------------------------------------------------------------


def retry_run(run: HandlerRun, *, mode: str | None = None) -> RunOutcome:
    """Re-dispatch a run that failed (for good or awaiting a retry), or was never handed off
    (admin "retry"); a succeeded or in-flight run is left alone."""
    mode = mode or get_settings().DISPATCH
    with transaction.atomic():
        locked = HandlerRun.objects.select_for_update().get(pk=run.pk)
        never_sent = locked.state == RunState.PENDING and not locked.celery_task_id
        if locked.state not in (RunState.FAILED, RunState.RETRYING) and not never_sent:
            return skipped_outcome(locked)
        handler = local_handler(locked.handler_name)
        if handler is None:
            return _deferred(locked)
        locked.state = RunState.PENDING
        locked.celery_task_id = ""
        locked.lease_expires_at = None
        locked.save(update_fields=["state", "celery_task_id", "lease_expires_at"])
    event = locked.event.to_event()
    if mode == INLINE:
        return run_inline(locked.pk, handler, event)
    return send_to_celery(locked.pk, handler, event, locked.celery_queue)
