"""Batched dispatch: `dispatch_batch` does what `dispatch_event` per item does, with the
bookkeeping of the whole batch in a few statements and (inline) one transaction."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from s3tasks import signals
from s3tasks.models import EventRecord, HandlerRun, OutboxMessage, RunState
from s3tasks.processing.dispatch import BatchItem, dispatch_batch, dispatch_event
from tests import handlers_for_dispatch
from tests.celery_support import SentTasks
from tests.factories import make_event, routes
from tests.handlers_for_dispatch import RUNS_BUCKET, SimulatedCrash, runs_of

pytestmark = pytest.mark.django_db


def items(*keys: str, handler: str = "tests.dispatch.count", **raw) -> list[BatchItem]:
    return [
        BatchItem(make_event(key, **raw), routes(handler), message_id=f"m-{key}") for key in keys
    ]


def summary(outcome) -> list[tuple]:
    """The parts of an outcome that must not depend on batching (ids aside)."""
    return [
        (o.handler_name, o.state, o.skipped, o.permanent, bool(o.error)) for o in outcome.runs
    ] + [(outcome.ok, outcome.permanent)]


class Received:
    """Collects `event_received` (message ids) and `run_succeeded`/`run_failed` (handler, state)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.finished: list[tuple[str, str, bool]] = []

    def __enter__(self) -> Received:
        signals.event_received.connect(self.on_event)
        signals.run_succeeded.connect(self.on_success)
        signals.run_failed.connect(self.on_failure)
        return self

    def __exit__(self, *exc) -> None:
        signals.event_received.disconnect(self.on_event)
        signals.run_succeeded.disconnect(self.on_success)
        signals.run_failed.disconnect(self.on_failure)

    def on_event(self, sender, event, record, message_id, **kwargs) -> None:
        assert record.pk and record.dedup_key == event.dedup_key
        self.events.append(message_id)

    def on_success(self, sender, run, event, result, **kwargs) -> None:
        self.finished.append((sender, run.state, connection.in_atomic_block))

    def on_failure(self, sender, run, event, exception, permanent, **kwargs) -> None:
        self.finished.append((sender, run.state, connection.in_atomic_block))


def test_a_batch_gives_the_same_outcomes_as_dispatching_each_item():
    def mixed(tag: str) -> list[BatchItem]:
        return [
            *items(f"{tag}-ok.csv"),
            *items(f"{tag}-bad.csv", handler="tests.dispatch.write_then_fail"),
            *items(f"{tag}-perm.csv", handler="tests.dispatch.fail_permanently"),
            BatchItem(make_event(f"{tag}-two.csv"), routes("nope.missing", "tests.dispatch.count")),
            *items(f"{tag}-ok.csv"),  # a duplicate of the first: skipped
            *items(f"{tag}-bad.csv", handler="tests.dispatch.write_then_fail"),  # tried again
        ]

    one_by_one = [dispatch_event(i.event, routes=i.routes, mode="inline") for i in mixed("seq")]
    batched = dispatch_batch(mixed("bat"), mode="inline")
    assert [summary(o) for o in batched] == [summary(o) for o in one_by_one]
    for tag in ("seq", "bat"):
        assert runs_of(RUNS_BUCKET, f"{tag}-ok.csv") == 1
        assert runs_of(RUNS_BUCKET, f"{tag}-two.csv") == 1
        assert runs_of(RUNS_BUCKET, f"{tag}-bad.csv") == 0
        bad = HandlerRun.objects.get(event__key=f"{tag}-bad.csv")
        assert (bad.state, bad.attempts) == (RunState.RETRYING, 2)
        assert "boom on" in bad.error and "Traceback" in bad.traceback


def test_a_duplicate_event_inside_a_batch_is_recorded_and_run_once():
    batch = items("same.csv", "same.csv", "other.csv")
    batch[1] = BatchItem(batch[1].event, batch[1].routes, message_id="m-redelivered")
    with Received() as seen:
        first, dup, other = dispatch_batch(batch, mode="inline")
    assert first.ok and dup.ok and other.ok
    assert first.event_id == dup.event_id != other.event_id
    assert not first.runs[0].skipped and dup.runs[0].skipped
    assert runs_of(RUNS_BUCKET, "same.csv") == 1 and HandlerRun.objects.count() == 2
    record = EventRecord.objects.get(pk=first.event_id)
    assert record.message_id == "m-same.csv"  # the first delivery names the record
    assert seen.events == ["m-same.csv", "m-other.csv"]


def test_one_failing_handler_fails_only_its_item_and_the_others_commit(
    django_capture_on_commit_callbacks,
):
    batch = [
        *items("good-1.csv", handler="tests.dispatch.enqueue_followup"),
        *items("bad.csv", handler="tests.dispatch.write_then_fail"),
        *items("good-2.csv", handler="tests.dispatch.enqueue_followup"),
    ]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        good_1, bad, good_2 = dispatch_batch(batch, mode="inline")
    assert good_1.ok and good_2.ok and not bad.ok and not bad.permanent
    assert "RuntimeError: boom on bad.csv" in bad.error
    assert runs_of(RUNS_BUCKET, "good-1.csv") == runs_of(RUNS_BUCKET, "good-2.csv") == 1
    assert runs_of(RUNS_BUCKET, "bad.csv") == 0
    # the failed handler's follow-up rolled back with its savepoint; the others' are kept
    assert sorted(OutboxMessage.objects.values_list("payload__args", flat=True)) == [
        ["good-1.csv"],
        ["good-2.csv"],
    ]
    for callback in callbacks:  # what the commit runs: the relay of the kept follow-ups
        callback()
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    states = dict(HandlerRun.objects.values_list("event__key", "state"))
    assert states == {"good-1.csv": "succeeded", "bad.csv": "retrying", "good-2.csv": "succeeded"}


@pytest.mark.django_db(transaction=True)
def test_event_received_is_sent_once_per_new_event_and_outcomes_only_after_commit():
    dispatch_event(make_event("old.csv"), routes=routes("tests.dispatch.count"), mode="inline")
    with Received() as seen:
        dispatch_batch(
            [
                *items("old.csv", "new.csv"),
                *items("fails.csv", handler="tests.dispatch.fail_permanently"),
            ],
            mode="inline",
        )
    assert seen.events == ["m-new.csv", "m-fails.csv"]
    assert seen.finished == [  # False: no transaction open, the batch has committed
        ("tests.dispatch.count", "succeeded", False),
        ("tests.dispatch.fail_permanently", "failed", False),
    ]


def test_inline_batch_statements_are_bounded_per_batch_not_per_event(
    django_assert_max_num_queries,
):
    batch = items(*[f"bound-{i}.csv" for i in range(10)], handler="tests.dispatch.noop")
    # 2 INSERTs (events, runs) + 1 UPDATE of the outcomes (+ the batch's savepoint pair inside
    # the test's transaction); a handler declared uses_database=False costs no savepoint
    with django_assert_max_num_queries(6):
        outcomes = dispatch_batch(batch, mode="inline")
    assert all(o.ok and o.runs[0].state == RunState.SUCCEEDED for o in outcomes)
    # a redelivery of the whole batch: 2 INSERTs, 2 SELECTs, nothing run, nothing updated
    with django_assert_max_num_queries(6):
        again = dispatch_batch(batch, mode="inline")
    assert all(o.runs[0].skipped for o in again)


def test_a_handler_that_may_use_the_database_costs_one_savepoint_pair_per_run(
    django_assert_num_queries,
):
    batch = items(
        *[f"pair-{i}.csv" for i in range(10)], handler="tests.dispatch.noop_with_savepoint"
    )
    with django_assert_num_queries(5 + 2 * 10) as captured:
        dispatch_batch(batch, mode="inline")
    statements = [q["sql"].split()[0] for q in captured.captured_queries]
    assert statements.count("SAVEPOINT") == 11 and statements.count("RELEASE") == 11


def test_single_event_dispatch_costs_a_handful_of_statements(django_assert_max_num_queries):
    with django_assert_max_num_queries(7):
        outcome = dispatch_event(
            make_event("one.csv"), routes=routes("tests.dispatch.noop"), mode="inline"
        )
    assert outcome.ok


@pytest.mark.django_db(transaction=True)
def test_a_crash_mid_batch_keeps_nothing_and_the_redelivery_runs_everything_once():
    batch = items("before.csv", "crash.csv", "after.csv", handler="tests.dispatch.count_or_crash")
    crashing = [
        BatchItem(make_event("crash.csv", crash=True), i.routes)
        if i.event.key == "crash.csv"
        else i
        for i in batch
    ]
    with pytest.raises(SimulatedCrash):
        dispatch_batch(crashing, mode="inline")
    assert not EventRecord.objects.exists() and not HandlerRun.objects.exists()
    assert runs_of(RUNS_BUCKET, "before.csv") == 0
    outcomes = dispatch_batch(batch, mode="inline")
    assert all(o.ok and not o.runs[0].skipped for o in outcomes)
    assert [runs_of(RUNS_BUCKET, k) for k in ("before.csv", "crash.csv", "after.csv")] == [1, 1, 1]
    assert set(HandlerRun.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)  # celery sends wait for commit
def test_celery_batch_sends_one_task_per_run_and_none_for_duplicates(monkeypatch):
    sent = SentTasks(monkeypatch, "tests.dispatch.count")
    outcomes = dispatch_batch(items("c1.csv", "c2.csv", "c1.csv"), mode="celery")
    assert all(o.ok for o in outcomes) and outcomes[2].runs[0].skipped
    assert sorted(call["args"][0]["key"] for call in sent.calls) == ["c1.csv", "c2.csv"]
    assert dispatch_batch(items("c2.csv", "c3.csv"), mode="celery")[0].runs[0].skipped
    assert len(sent.calls) == 3 and HandlerRun.objects.exclude(celery_task_id="").count() == 3


def test_empty_batch_and_bad_mode():
    assert dispatch_batch([], mode="inline") == []
    with pytest.raises(ValueError, match="'inline' or 'celery'"):
        dispatch_batch(items("x.csv"), mode="sideways")


# --- PostgreSQL: overlapping batches from racing workers ----------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_threads_dispatching_overlapping_batches_run_each_handler_once(monkeypatch):
    monkeypatch.setattr(handlers_for_dispatch, "RIVALS_SEEN", [])
    # the last batches run with no rival left: do not hold them long
    monkeypatch.setattr(handlers_for_dispatch, "HOLD_FOR_RIVAL", 0.5)
    keys = [f"overlap-{i}.csv" for i in range(6)]
    # different subsets in different orders: lock order must not depend on arrival order
    batches = [keys[:4], list(reversed(keys[2:])), keys[1:5][::-1], keys[::2]]
    outcomes: list = []
    errors: list = []
    barrier = threading.Barrier(len(batches))

    def worker(batch_keys: list[str]) -> None:
        try:
            barrier.wait(10)
            outcomes.extend(
                dispatch_batch(
                    items(*batch_keys, handler="tests.dispatch.slow_count"), mode="inline"
                )
            )
        except Exception as exc:  # a deadlock would land here
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(outcomes) == sum(len(b) for b in batches) and all(o.ok for o in outcomes)
    assert sum(not o.runs[0].skipped for o in outcomes) == len(keys)
    assert [runs_of(RUNS_BUCKET, k) for k in keys] == [1] * len(keys)
    assert EventRecord.objects.count() == HandlerRun.objects.count() == len(keys)
    assert set(HandlerRun.objects.values_list("state", "attempts")) == {("succeeded", 1)}
    assert any(handlers_for_dispatch.RIVALS_SEEN)  # some batch really waited on another's lock


def test_a_batch_routed_to_a_handler_this_process_lacks_leaves_every_run_untouched():
    outcomes = dispatch_batch(items("gone-1.csv", "gone-2.csv", handler="nope.gone"), mode="inline")
    assert [o.runs[0].state for o in outcomes] == [RunState.PENDING, RunState.PENDING]
    assert all(o.deferred and not o.ok for o in outcomes)
    run = HandlerRun.objects.get(pk=outcomes[0].runs[0].run_id)
    assert (run.attempts, run.started_at, run.finished_at, run.error) == (0, None, None, "")
