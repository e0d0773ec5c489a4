"""`call_handler`: one handler inside a batch's transaction runs in its own `atomic()` block
(public Django API), so a failure undoes exactly its writes and `on_commit` callbacks; a
handler declared `uses_database=False` runs without one and cannot send SQL."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from s3tasks.models import EventRecord, OutboxMessage
from s3tasks.processing.execution import SwallowedDatabaseError, UndeclaredDatabaseUse, call_handler
from s3tasks.processing.runs import new_record
from s3tasks.rules.registry import Handler
from tests.factories import make_event

pytestmark = pytest.mark.django_db

EVENT = make_event("any.csv")


def write(key: str) -> EventRecord:
    record = new_record(make_event(key))
    record.save()
    return record


def keys() -> list[str]:
    return sorted(EventRecord.objects.values_list("key", flat=True))


def handler(func, **options) -> Handler:
    return Handler(name=f"tests.transaction.{func.__name__}", func=func, **options)


def test_a_failure_rolls_back_only_its_own_handler_and_later_handlers_still_commit(
    django_capture_on_commit_callbacks,
):
    fired: list[str] = []

    def step(key: str, fail: bool = False):
        def run(event):
            write(key)
            transaction.on_commit(lambda: fired.append(key))
            if fail:
                raise RuntimeError("boom")

        run.__name__ = key.replace(".", "_")
        return handler(run)

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        call_handler(step("first.csv"), EVENT)
        with pytest.raises(RuntimeError):
            call_handler(step("failed.csv", fail=True), EVENT)
        call_handler(step("third.csv"), EVENT)
    assert keys() == ["first.csv", "third.csv"]
    assert fired == ["first.csv", "third.csv"]


def test_a_swallowed_database_error_fails_the_handler_instead_of_losing_its_writes_silently():
    write("taken.csv")

    def swallow(event):
        write("lost.csv")
        try:
            with transaction.atomic(savepoint=False):
                write("taken.csv")  # duplicate dedup key
        except IntegrityError:
            pass  # swallowed: Django marks the handler's block for rollback

    with transaction.atomic():
        with pytest.raises(SwallowedDatabaseError, match="caught a database error"):
            call_handler(handler(swallow), EVENT)
        write("after.csv")  # the batch's transaction is still usable
    assert keys() == ["after.csv", "taken.csv"]


def test_nested_atomic_blocks_inside_the_handler_keep_working():
    def nested(event):
        with pytest.raises(RuntimeError), transaction.atomic():
            write("inner.csv")
            raise RuntimeError("inner failure, handled by the handler")
        write("kept.csv")

    with transaction.atomic():
        call_handler(handler(nested), EVENT)
    assert keys() == ["kept.csv"]


def test_a_handler_that_uses_no_database_sends_no_savepoint(django_assert_num_queries):
    def pure(event):
        return "computed"

    with transaction.atomic(), django_assert_num_queries(0):
        assert call_handler(handler(pure, uses_database=False), EVENT) == ("computed", "computed")


def test_sql_from_a_handler_declared_without_database_is_refused_before_it_runs():
    def sneaky(event):
        write("sneaky.csv")

    with transaction.atomic():
        with pytest.raises(UndeclaredDatabaseUse, match="uses_database=False"):
            call_handler(handler(sneaky, uses_database=False), EVENT)
        write("after.csv")
    assert keys() == ["after.csv"]


def test_follow_ups_returned_by_a_handler_without_database_are_still_recorded():
    from s3tasks.followups.commands import EnqueueTask

    def returns_commands(event):
        return [EnqueueTask("tests.dispatch.followup", args=(event.key,))]

    with transaction.atomic():
        _, summary = call_handler(handler(returns_commands, uses_database=False), EVENT)
    assert summary == "1 follow-up command(s)"
    assert OutboxMessage.objects.count() == 1
