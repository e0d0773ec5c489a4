"""`handler_savepoint`: `atomic()` around one handler inside a batch's transaction, minus the
RELEASE; a failure must undo exactly that handler's writes and `on_commit` callbacks."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from s3tasks.execution import handler_savepoint
from s3tasks.models import EventRecord
from s3tasks.records import new_record
from tests.test_dispatch import make_event

pytestmark = pytest.mark.django_db


def write(key: str) -> EventRecord:
    record = new_record(make_event(key))
    record.save()
    return record


def keys() -> list[str]:
    return sorted(EventRecord.objects.values_list("key", flat=True))


def test_a_failure_rolls_back_only_its_own_block_and_later_blocks_still_commit(
    django_capture_on_commit_callbacks,
):
    fired: list[str] = []
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        outer = list(connection.savepoint_ids)
        with handler_savepoint():
            write("first.csv")
            transaction.on_commit(lambda: fired.append("first"))
        with pytest.raises(RuntimeError), handler_savepoint():
            write("failed.csv")
            transaction.on_commit(lambda: fired.append("failed"))
            raise RuntimeError("boom")
        with handler_savepoint():
            write("third.csv")
            transaction.on_commit(lambda: fired.append("third"))
        assert connection.savepoint_ids == outer  # the stack is balanced again
    assert keys() == ["first.csv", "third.csv"]
    assert fired == ["first", "third"]


def test_a_swallowed_database_error_rolls_the_block_back_like_atomic():
    write("taken.csv")
    with transaction.atomic():
        with handler_savepoint():
            write("lost.csv")
            try:
                with transaction.atomic(savepoint=False):
                    write("taken.csv")  # duplicate dedup key
            except IntegrityError:
                pass  # swallowed: the transaction is marked for rollback
        assert not connection.needs_rollback
        write("after.csv")  # the batch's transaction is still usable
    assert keys() == ["after.csv", "taken.csv"]


def test_nested_atomic_blocks_inside_the_handler_keep_working():
    with transaction.atomic(), handler_savepoint():
        with pytest.raises(RuntimeError), transaction.atomic():
            write("inner.csv")
            raise RuntimeError("inner failure, handled by the handler")
        write("kept.csv")
    assert keys() == ["kept.csv"]


def test_outside_a_transaction_it_is_a_plain_atomic_block():
    with pytest.raises(RuntimeError), handler_savepoint():
        write("gone.csv")
        raise RuntimeError("boom")
    with handler_savepoint():
        write("kept.csv")
    assert keys() == ["kept.csv"]


def test_a_block_without_sql_sends_no_savepoint_and_a_failure_still_drops_its_callbacks(
    django_capture_on_commit_callbacks, django_assert_num_queries
):
    fired: list[str] = []
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        with django_assert_num_queries(0):
            with handler_savepoint():
                transaction.on_commit(lambda: fired.append("kept"))
            with pytest.raises(RuntimeError), handler_savepoint():
                transaction.on_commit(lambda: fired.append("dropped"))
                raise RuntimeError("boom")
    assert fired == ["kept"]


def test_the_savepoint_is_sent_once_before_the_first_statement(django_assert_num_queries):
    with transaction.atomic():
        with django_assert_num_queries(3) as captured, handler_savepoint():
            write("one.csv")
            write("two.csv")
        assert captured.captured_queries[0]["sql"].startswith("SAVEPOINT")
