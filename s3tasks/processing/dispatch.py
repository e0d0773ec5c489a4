"""Dispatch: record events, then run their handlers inline or hand them to Celery.

`dispatch_batch` is what the batch core (worker and Lambda) calls for every received batch;
`dispatch_event` is a batch of one. The bookkeeping is done per batch: one INSERT for the
batch's `EventRecord`s and one for its `HandlerRun`s (idempotent, see `records`), then

- `inline`: in ONE transaction, the runs that already existed are locked, every handler runs
  in its own savepoint, exactly once per (dedup key, handler), and all outcomes are written
  with one UPDATE. A process killed mid-batch commits nothing; the redelivery runs it again.
- `celery`: one transaction records the rows, the new runs already handed off (a task id
  each, and a lease); after the commit their tasks are published through one producer
  (`publish_handed_off`). A process dying between the commit and the publish leaves runs
  whose lease recovery finds (`s3tasks.ops.recovery`), as it finds a task the broker lost;
  a broker refusing a task gets its run's task id taken back, for the redelivery to send.
  Runs that existed without a task id are handed off under their row locks (`hand_off`).
  The task body (`celery_tasks.execute_celery_run`) claims the run the same exactly-once
  way and retries with exponential backoff.

A run that ended (`succeeded`, or `failed` for good) is never run again by a delivery. A
handler this process does not have is left alone for a process that has it (rolling deploys).
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import connection, transaction

from s3tasks import signals
from s3tasks.conf import get_settings
from s3tasks.events import S3Event
from s3tasks.models import EventRecord, HandlerRun, RunState
from s3tasks.outages import describe, is_unavailable
from s3tasks.processing.execution import (
    OUTCOME_FIELDS,
    TERMINAL_STATES,
    Attempt,
    attempt_run,
    inline_policy,
    lease_deadline,
    report,
    run_claimed,
    run_log_fields,
)
from s3tasks.processing.runs import (
    RunKey,
    ensure_runs,
    record_events,
    update_rows,
)
from s3tasks.rules.registry import Handler, registry
from s3tasks.rules.routing import Route, route

logger = logging.getLogger(__name__)

INLINE = "inline"
CELERY = "celery"


@dataclass(frozen=True)
class RunOutcome:
    """What dispatch did with one handler.

    `skipped`: the run had already ended or was already handed off; `permanent`: it failed for
    good (deliveries never run it again); `deferred`: this process does not have the handler,
    so the run is left untouched for one that does; `unavailable`: the broker could not be
    reached, so nothing was handed off.

    When the handler ran in this call (inline), `result` is what it returned and `exception`
    what it raised; both stay in memory (the run row keeps only their text).
    """

    handler_name: str
    run_id: int | None
    state: str
    skipped: bool = False
    error: str = ""
    permanent: bool = False
    deferred: bool = False
    unavailable: bool = False
    result: Any = field(default=None, compare=False, repr=False)
    exception: BaseException | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """Succeeded, skipped as done/in flight, or durably handed to Celery."""
        return not self.error

    @property
    def retryable(self) -> bool:
        """Failed in a way a later delivery of the same message should retry."""
        return bool(self.error) and not (self.permanent or self.deferred or self.unavailable)


@dataclass(frozen=True)
class DispatchOutcome:
    """What dispatch did with one event; `ok` means the message may be deleted."""

    event_id: int | None
    runs: tuple[RunOutcome, ...]
    ok: bool
    permanent: bool = False
    error: str = ""

    @property
    def unavailable(self) -> bool:
        return any(r.unavailable for r in self.runs)

    @property
    def deferred(self) -> bool:
        return any(r.deferred for r in self.runs)

    @property
    def retryable(self) -> bool:
        return any(r.retryable for r in self.runs)


@dataclass(frozen=True)
class BatchItem:
    """One event to dispatch, where it came from, and its routes (None: `route(event)`)."""

    event: S3Event
    routes: Sequence[Route] | None = None
    message_id: str = ""
    queue_name: str = ""


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


def _skipped(run: HandlerRun) -> RunOutcome:
    """A run this delivery leaves alone: done, handed off, or failed for good."""
    if run.state == RunState.FAILED:
        error = run.error or "failed permanently"
        return RunOutcome(run.handler_name, run.pk, run.state, True, error, permanent=True)
    return RunOutcome(run.handler_name, run.pk, run.state, skipped=True)


def _outcome(attempt: Attempt) -> RunOutcome:
    run = attempt.run
    if attempt.skipped:
        return _skipped(run)
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
                    outcomes.append(_skipped(run))
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
    created: dict[int, HandOff] = {}  # created handed off by this call: publish their tasks
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
                row.append(_skipped(run))  # a duplicate of an event earlier in this batch
            elif key in task_ids and run.celery_task_id == task_ids[key]:
                created[run.pk] = HandOff(run, handler, p.item.event, run.celery_queue or None)
                row.append(run.pk)
            elif run.state in TERMINAL_STATES or run.celery_task_id:
                row.append(_skipped(run))  # done, or handed off by an earlier delivery
            else:
                queue = celery_queue_for(chosen.celery_queue)
                handoffs[run.pk] = HandOff(run, handler, p.item.event, queue)
                row.append(run.pk)
        decided.append(row)
    for p in planned:
        _announce(p)
    sent = _send_when_committed(list(created.values()), list(handoffs.values()))
    return [
        _event_outcome(p.event_id, tuple(sent[o] if isinstance(o, int) else o for o in row))
        for p, row in zip(planned, decided, strict=True)
    ]


def celery_queue_for(route_queue: str = "") -> str | None:
    """The Celery queue: the binding's, else `S3TASKS["CELERY_QUEUE"]`, else Celery's default."""
    return route_queue or get_settings().CELERY_QUEUE or None


@dataclass(frozen=True)
class HandOff:
    """A run to hand to Celery: the handler whose task runs it, the event, the Celery queue."""

    run: HandlerRun
    handler: Handler
    event: S3Event
    queue: str | None


# What a hand-off writes on its run: which task has it, on which queue, until when.
HAND_OFF_FIELDS = ["celery_task_id", "celery_queue", "lease_expires_at"]


def send_to_celery(
    run_id: int, handler: Handler, event: S3Event, route_queue: str = ""
) -> RunOutcome:
    """Send the handler's task once for this run; defer to commit inside a caller's transaction."""
    run = HandlerRun(pk=run_id, handler_name=handler.name)
    handoff = HandOff(run, handler, event, celery_queue_for(route_queue))
    return _hand_off_when_committed([handoff])[run_id]


def resend_to_celery(run: HandlerRun, handler: Handler, event: S3Event) -> RunOutcome:
    """Send a new task for a run whose task was lost (recovery), replacing the old task id.

    Sends at once, inside the caller's transaction that holds the run's lock: a Celery worker
    taking the task waits for that lock, and a process dying before its commit leaves the old
    lease to be found again (the old task, should it turn up, no longer owns the run).
    """
    handoff = HandOff(run, handler, event, celery_queue_for(run.celery_queue))
    return hand_off([handoff], resend=True)[run.pk]


def _hand_off_when_committed(handoffs: list[HandOff]) -> dict[int, RunOutcome]:
    return _send_when_committed([], handoffs)


def _send_when_committed(created: list[HandOff], handoffs: list[HandOff]) -> dict[int, RunOutcome]:
    """Publish the tasks of `created` runs (committed with their task ids) and hand off
    `handoffs`; inside a caller's transaction, once it commits (Celery must see the rows)."""
    if not created and not handoffs:
        return {}

    def send() -> dict[int, RunOutcome]:
        return {**publish_handed_off(created), **hand_off(handoffs)}

    if connection.in_atomic_block:
        transaction.on_commit(send, robust=True)
        pending = [*created, *handoffs]
        return {h.run.pk: RunOutcome(h.handler.name, h.run.pk, RunState.PENDING) for h in pending}
    return send()


def publish_handed_off(handoffs: Sequence[HandOff]) -> dict[int, RunOutcome]:
    """Publish the tasks of runs whose task id and lease are committed already; outcomes by
    run id.

    A task the broker refused gets its run's task id and lease taken back (one conditional
    UPDATE), so the redelivered message sends it again. A process dying before it publishes
    (or before that UPDATE) leaves runs that look handed off: recovery re-sends them once
    their lease has run out (`s3tasks.ops.recovery`).
    """
    if not handoffs:
        return {}
    errors = _publish(handoffs)
    refused = [h for h in handoffs if h.run.pk in errors]
    if refused:
        _take_back(refused)
    outcomes = {h.run.pk: _handed_off(h, errors.get(h.run.pk)) for h in handoffs}
    outcomes.update(_eager_outcomes([h for h in handoffs if h.run.pk not in errors]))
    return outcomes


def _take_back(refused: Sequence[HandOff]) -> None:
    """Clear the task id and lease of runs whose task the broker refused (still ours only)."""
    try:
        taken = HandlerRun.objects.filter(
            pk__in=[h.run.pk for h in refused],
            celery_task_id__in=[h.run.celery_task_id for h in refused],
        ).update(celery_task_id="", lease_expires_at=None)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        logger.warning(
            "s3tasks: could not clear the task ids of %d unsent run(s) (%s); recovery sends "
            "them once their lease runs out (RUN_LEASE)",
            len(refused),
            describe(exc),
        )
        return
    if taken:
        for h in refused:
            h.run.celery_task_id, h.run.lease_expires_at = "", None


def hand_off(handoffs: Sequence[HandOff], *, resend: bool = False) -> dict[int, RunOutcome]:
    """Send each run's Celery task once, all of them with one producer; outcomes by run id.

    The runs' rows must be committed already (a Celery worker has to see them). In one
    transaction: lock the runs (id order) and keep those neither ended nor handed off (with
    `resend`: not ended); store a new task id, the queue and the lease on them (one UPDATE);
    publish their tasks; commit. A concurrent delivery waits for the lock and then finds the
    task id; a crash before the commit leaves the runs unsent, for the redelivered message to
    send again (a task already published then is absorbed by the claim, docs/dispatch.md).
    A task the broker refused gets its run's previous values back before the commit.
    """
    if not handoffs:
        return {}
    by_id = {h.run.pk: h for h in handoffs}
    with transaction.atomic():
        locked = HandlerRun.objects.select_for_update().filter(pk__in=by_id).order_by("pk")
        outcomes: dict[int, RunOutcome] = {}
        chosen = []
        for run in locked:
            if run.state in TERMINAL_STATES or (run.celery_task_id and not resend):
                outcomes[run.pk] = _skipped(run)
            else:
                chosen.append(replace(by_id[run.pk], run=run))
        previous = {h.run.pk: [getattr(h.run, name) for name in HAND_OFF_FIELDS] for h in chosen}
        lease = lease_deadline()
        for h in chosen:
            h.run.celery_task_id = str(uuid.uuid4())
            h.run.celery_queue = h.queue or ""
            h.run.lease_expires_at = lease
        update_rows([h.run for h in chosen], HAND_OFF_FIELDS)
        errors = _publish(chosen)
        refused = [h.run for h in chosen if h.run.pk in errors]
        for run in refused:
            for name, value in zip(HAND_OFF_FIELDS, previous[run.pk], strict=True):
                setattr(run, name, value)
        update_rows(refused, HAND_OFF_FIELDS)
    for h in chosen:
        outcomes[h.run.pk] = _handed_off(h, errors.get(h.run.pk))
    for pk, h in by_id.items():  # a run deleted meanwhile: nothing left to send
        outcomes.setdefault(pk, _skipped(h.run))
    outcomes.update(_eager_outcomes([h for h in chosen if h.run.pk not in errors]))
    return outcomes


def _eager_outcomes(sent: Sequence[HandOff]) -> dict[int, RunOutcome]:
    """With eager Celery the tasks ran right here when published: what they did."""
    if not sent or not sent[0].handler.task.app.conf.task_always_eager:
        return {}
    ran = HandlerRun.objects.in_bulk([h.run.pk for h in sent])
    return {pk: _eager_outcome(run) for pk, run in ran.items()}


def _publish(handoffs: Sequence[HandOff]) -> dict[int, BaseException]:
    """Publish the tasks through one producer (one broker connection); the errors by run id.
    Once the broker is unreachable, the tasks left are not tried (each try would wait)."""
    if not handoffs:
        return {}
    errors: dict[int, BaseException] = {}
    published: set[int] = set()
    try:
        with handoffs[0].handler.task.app.producer_or_acquire() as producer:
            for h in handoffs:
                try:
                    h.handler.task.apply_async(
                        args=[h.event.to_dict(), h.run.pk],
                        queue=h.queue,
                        task_id=h.run.celery_task_id,
                        serializer="json",
                        producer=producer,
                        # what monitoring shows of the arguments; Celery's own repr of the
                        # whole event costs more than sending it
                        argsrepr=f"('s3://{h.event.bucket}/{h.event.key}', {h.run.pk})",
                        kwargsrepr="{}",
                    )
                except Exception as exc:
                    errors[h.run.pk] = exc
                    if is_unavailable(exc):
                        raise
                else:
                    published.add(h.run.pk)
    except Exception as exc:  # no producer, or the broker went away: none of the rest is sent
        errors.update({h.run.pk: exc for h in handoffs if h.run.pk not in published})
    return errors


def _handed_off(handoff: HandOff, exc: BaseException | None) -> RunOutcome:
    run, name, event = handoff.run, handoff.handler.name, handoff.event
    if exc is None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "s3tasks: %s on s3://%s/%s sent to Celery (run %s, task %s)",
                name,
                event.bucket,
                event.key,
                run.pk,
                run.celery_task_id,
                extra={**run_log_fields(run, name, event, finished=False), "outcome": "sent"},
            )
        return RunOutcome(name, run.pk, run.state)
    # the broker is down (or refused it): the run stays unsent so a redelivery sends it
    unavailable = is_unavailable(exc)
    error = f"could not send the Celery task ({describe(exc)})"
    fields = {**run_log_fields(run, name, event, finished=False), "outcome": "unsent"}
    if unavailable:
        logger.warning("s3tasks: could not send %s to Celery: %s", name, error, extra=fields)
    else:
        logger.error("s3tasks: could not send %s to Celery", name, exc_info=exc, extra=fields)
    return RunOutcome(name, run.pk, run.state, error=error, unavailable=unavailable)


def _eager_outcome(run: HandlerRun) -> RunOutcome:
    if run.state == RunState.FAILED:  # eager Celery ran it right here and it failed
        return _skipped(run)
    return RunOutcome(run.handler_name, run.pk, run.state)


# --- admin: retry a failed run ------------------------------------------------------------


def retry_run(run: HandlerRun, *, mode: str | None = None) -> RunOutcome:
    """Re-dispatch a run that failed (for good or awaiting a retry), or was never handed off
    (admin "retry"); a succeeded or in-flight run is left alone."""
    mode = mode or get_settings().DISPATCH
    with transaction.atomic():
        locked = HandlerRun.objects.select_for_update().get(pk=run.pk)
        never_sent = locked.state == RunState.PENDING and not locked.celery_task_id
        if locked.state not in (RunState.FAILED, RunState.RETRYING) and not never_sent:
            return _skipped(locked)
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
