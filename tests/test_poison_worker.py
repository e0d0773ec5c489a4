"""Poison isolation in `sqs_worker`: the real loop, batch core and inline dispatch (in-memory
SQS). Each poison message is left for the DLQ with a `MessageFailure` row; the messages
received with it in one batch are handled and deleted. Run on SQLite and on PostgreSQL
(`S3TASKS_DB=postgres`), where NUL characters and over-long values fail an INSERT.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import DatabaseError
from payload_files import payload_text

import s3tasks.worker.runner
from s3tasks.models import EventRecord, MessageFailure
from s3tasks.worker import WorkerOptions
from s3tasks.worker.memory_sqs import MemorySQS
from s3tasks.worker.runner import build_consumer
from tests.worker_app.handlers import COUNT, runs_per_key
from tests.worker_support import bind, s3_body, s3_record

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "worker-poison"
# one received batch of 10: every message is dispatched in the same batch core call
OPTIONS = {
    "wait_time": 0,
    "exit_when_idle": 0.5,
    "dispatch": "inline",
    "concurrency": 10,
    "batch_size": 10,
    "max_backoff": 60,
}


def poisoned(**changes: Any) -> str:
    record = s3_record(BUCKET, "poison.txt")
    for path, value in changes.items():
        *parents, name = path.split(".")
        target = record
        for parent in parents:
            target = target[parent]
        target[name] = value
    return json.dumps({"Records": [record]})


POISON = {
    "deep": '{"Records": ' + "[" * 1000 + "]" * 1000 + "}",
    "superscript": poisoned(**{"s3.object.size": "²"}),
    "surrogate": poisoned(**{"s3.object.key": "a\ud800"}),
    "bucket": poisoned(**{"s3.bucket.name": "b" * 100}),
    "event-name": poisoned(eventName="ObjectCreated:" + "x" * 286),
    "nul": poisoned(**{"s3.object.key": "a%00b"}),
    "size": poisoned(**{"s3.object.size": 10**20}),
}


def test_poison_messages_fail_alone_with_a_row_each_and_their_batch_is_handled() -> None:
    bind(COUNT, BUCKET)
    sqs = MemorySQS()
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, "good/1.txt", "good/2.txt"))
    for body in POISON.values():
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.send_message(QueueUrl=url, MessageBody=s3_body(BUCKET, "good/3.txt"))

    final = build_consumer(sqs, ["jobs"], WorkerOptions(**OPTIONS), relay=None).run()

    assert (final.handled, final.malformed, final.failed) == (2, len(POISON), 0)
    assert runs_per_key() == {"good/1.txt": 1, "good/2.txt": 1, "good/3.txt": 1}
    assert EventRecord.objects.count() == 3
    rows = list(MessageFailure.objects.order_by("reason"))
    assert len(rows) == len(POISON)
    assert all(row.queue_name == "jobs" and len(row.reason) < 1000 for row in rows)
    assert sqs.counts(url) == (0, len(POISON))  # left in SQS, hidden for the backoff


def test_an_eventbridge_event_published_to_sns_is_handled_by_the_worker() -> None:
    bind(COUNT, "acme-media")
    sqs = MemorySQS()
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=payload_text("eventbridge_via_sns"))

    final = build_consumer(sqs, ["jobs"], WorkerOptions(**OPTIONS), relay=None).run()

    assert (final.handled, final.malformed) == (1, 0)
    assert runs_per_key() == {"exports/2024 Q2/report+final.csv": 1}


def test_a_row_that_cannot_be_written_leaves_the_message_in_sqs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(**kwargs: Any) -> None:
        raise DatabaseError("database is gone")

    monkeypatch.setattr(s3tasks.worker.runner, "record_message_failure", broken)
    sqs = MemorySQS()
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=POISON["deep"])

    final = build_consumer(sqs, ["jobs"], WorkerOptions(**OPTIONS), relay=None).run()

    assert final.deleted == 0
    assert sqs.counts(url) == (0, 1)
    assert not MessageFailure.objects.exists()
