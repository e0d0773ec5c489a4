"""The Celery hand-off: publish the tasks of runs recorded handed off, or hand off runs that
exist without a task id under their row locks; recovery's and retries' re-sends.

Order and crash analysis: docs/dispatch.md, "Celery mode: the hand-off". In short, a batch's
new runs are committed with their task ids and leases (`dispatch`), then published here
through one producer (`publish_handed_off`); a refused task gets its id taken back so the
redelivered message sends it; a process dying in between leaves runs that recovery re-sends
once their lease runs out. A task owns its run (`runs.claim_run`), so a stale task runs
nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from django.db import connection, transaction

from s3tasks.conf import get_settings
from s3tasks.events import S3Event
from s3tasks.models import HandlerRun, RunState
from s3tasks.outages import describe, is_unavailable
from s3tasks.processing.execution import TERMINAL_STATES, lease_deadline, run_log_fields
from s3tasks.processing.outcomes import RunOutcome, skipped_outcome
from s3tasks.processing.runs import update_rows
from s3tasks.rules.registry import Handler

logger = logging.getLogger(__name__)


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
    return send_when_committed([], [handoff])[run_id]


def resend_to_celery(run: HandlerRun, handler: Handler, event: S3Event) -> RunOutcome:
    """Send a new task for a run whose task was lost (recovery), replacing the old task id.

    Sends at once, inside the caller's transaction that holds the run's lock: a Celery worker
    taking the task waits for that lock, and a process dying before its commit leaves the old
    lease to be found again (the old task, should it turn up, no longer owns the run).
    """
    handoff = HandOff(run, handler, event, celery_queue_for(run.celery_queue))
    return hand_off([handoff], resend=True)[run.pk]


def send_when_committed(created: list[HandOff], handoffs: list[HandOff]) -> dict[int, RunOutcome]:
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
                outcomes[run.pk] = skipped_outcome(run)
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
        outcomes.setdefault(pk, skipped_outcome(h.run))
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
        return skipped_outcome(run)
    return RunOutcome(run.handler_name, run.pk, run.state)
