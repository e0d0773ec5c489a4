"""The worker loop with the real batch core, routing and inline dispatch (in-memory SQS):
exactly-once under duplicate deliveries, malformed-message records, test events, one
transaction per message, the heartbeat file and the outbox relay hook."""

from __future__ import annotations

import json
import os
import time

import pytest

import s3tasks.processing.dispatch
from s3tasks.models import EventRecord, HandlerRun, MessageFailure, RunState
from s3tasks.processing.messages import InboundMessage, Status, process_message, process_messages
from s3tasks.worker import Consumer, SqsQueueClient, WorkerOptions
from s3tasks.worker.memory_sqs import MemorySQS
from s3tasks.worker.runner import build_consumer, record_malformed
from tests.worker_app.handlers import COUNT, runs_per_key
from tests.worker_support import bind, s3_body, s3_record

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "worker-pipeline"
OPTIONS = {"wait_time": 0, "exit_when_idle": 0.5, "dispatch": "inline", "concurrency": 4}


def test_duplicate_deliveries_run_each_event_handler_once():
    bind(COUNT, BUCKET)
    sqs = MemorySQS()
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    keys = [f"dup/{i}.txt" for i in range(30)]
    for i in range(0, 30, 3):
        body = s3_body(BUCKET, *keys[i : i + 3])
        for _ in range(3):  # every message delivered three times
            sqs.send_message(QueueUrl=url, MessageBody=body)
    final = build_consumer(sqs, ["jobs"], WorkerOptions(**OPTIONS), relay=None).run()
    assert final.handled == 30 and final.events == 90
    assert runs_per_key() == dict.fromkeys(keys, 1)
    assert HandlerRun.objects.filter(state=RunState.SUCCEEDED).count() == 30


def test_malformed_message_is_recorded_and_test_events_are_deleted():
    sqs = MemorySQS()
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(test_event))
    sqs.send_message(QueueUrl=url, MessageBody='{"Records": "not a list"}')
    options = WorkerOptions(**{**OPTIONS, "max_backoff": 60})
    final = build_consumer(sqs, ["jobs"], options, relay=None).run()
    assert (final.handled, final.malformed, final.deleted) == (1, 1, 1)
    failure = MessageFailure.objects.get()
    assert failure.queue_name == "jobs" and failure.receive_count == 1
    assert "Records" in failure.reason and failure.body_excerpt.startswith('{"Records"')
    assert sqs.counts(url) == (0, 1)  # left in SQS, hidden for its backoff, bound for the DLQ


def test_a_message_whose_dispatch_breaks_is_rolled_back_as_a_whole(monkeypatch):
    bind(COUNT, BUCKET)
    real = s3tasks.processing.dispatch.run_claimed

    def broken_second(run, handler, event, on_failure):
        if event.key.endswith("second.txt"):
            raise RuntimeError("database went away")
        return real(run, handler, event, on_failure)

    monkeypatch.setattr(s3tasks.processing.dispatch, "run_claimed", broken_second)
    body = s3_body(BUCKET, "whole/first.txt", "whole/second.txt")
    outcome = process_message(InboundMessage("m1", body), dispatch_mode="inline")
    assert outcome.status == Status.FAILED and "database went away" in outcome.error
    assert runs_per_key() == {}  # the first event's run was not kept either
    assert not EventRecord.objects.exists()

    monkeypatch.setattr(s3tasks.processing.dispatch, "run_claimed", real)
    again = process_message(InboundMessage("m1", body, receive_count=2), dispatch_mode="inline")
    assert again.status == Status.HANDLED
    assert runs_per_key() == {"whole/first.txt": 1, "whole/second.txt": 1}


def test_heartbeat_file_is_touched_and_the_outbox_relay_runs_periodically(tmp_path):
    sqs = MemorySQS()
    sqs.create_queue(QueueName="jobs")
    alive = tmp_path / "alive"
    relayed: list[float] = []
    client = SqsQueueClient(sqs)
    options = WorkerOptions(
        wait_time=0, exit_when_idle=1.2, heartbeat_file=str(alive), outbox_interval=0.3
    )
    began = time.time()
    Consumer(
        client,
        [client.resolve("jobs")],
        options,
        record_malformed=record_malformed,
        relay=lambda: relayed.append(time.time()),
    ).run()
    assert alive.exists() and os.path.getmtime(alive) >= began - 1
    assert len(relayed) >= 2


def test_without_queue_flags_every_enabled_queue_row_is_consumed():
    from s3tasks.models import Queue
    from s3tasks.worker import QueueSelectionError, resolve_queues

    Queue.objects.update(enabled=False)  # e.g. the default queue of the demo's code bindings
    sqs = MemorySQS()
    for name in ("events-a", "events-b", "paused"):
        sqs.create_queue(QueueName=name)
    Queue.objects.create(name="events-a")
    Queue.objects.create(name="events-b", url="https://sqs.us-east-1.amazonaws.com/1/events-b")
    Queue.objects.create(name="paused", enabled=False)
    client = SqsQueueClient(sqs)
    assert [q.name for q in resolve_queues(client, [])] == ["events-a", "events-b"]
    Queue.objects.create(name="not-created-yet")
    with pytest.raises(QueueSelectionError, match="not-created-yet.*sync_notifications"):
        resolve_queues(client, [])


def test_a_received_batch_is_dispatched_together_and_each_message_gets_its_own_outcome():
    bind(COUNT, BUCKET)
    a, b = s3_record(BUCKET, "batch/a.txt"), s3_record(BUCKET, "batch/b.txt")
    messages = [
        InboundMessage("good", json.dumps({"Records": [a, b]})),
        InboundMessage("bad", '{"Records": "not a list"}'),
        InboundMessage("dup", json.dumps({"Records": [b]})),  # b delivered again
        InboundMessage("test", json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})),
    ]
    outcomes = process_messages(messages, dispatch_mode="inline")
    assert [(o.message_id, o.status, o.events, o.runs) for o in outcomes] == [
        ("good", Status.HANDLED, 2, 2),
        ("bad", Status.MALFORMED, 0, 0),
        ("dup", Status.HANDLED, 1, 1),
        ("test", Status.TEST_EVENT, 0, 0),
    ]
    assert runs_per_key() == {"batch/a.txt": 1, "batch/b.txt": 1}


def test_when_a_batch_breaks_as_a_whole_only_the_message_at_fault_fails(monkeypatch):
    bind(COUNT, BUCKET)
    real = s3tasks.processing.dispatch.run_claimed

    def broken(run, handler, event, on_failure):
        if event.key == "split/broken.txt":
            raise RuntimeError("database rejected it")
        return real(run, handler, event, on_failure)

    monkeypatch.setattr(s3tasks.processing.dispatch, "run_claimed", broken)
    messages = [
        InboundMessage("m1", s3_body(BUCKET, "split/one.txt")),
        InboundMessage("m2", s3_body(BUCKET, "split/broken.txt", "split/two.txt")),
        InboundMessage("m3", s3_body(BUCKET, "split/three.txt")),
    ]
    outcomes = process_messages(messages, dispatch_mode="inline")
    assert [o.status for o in outcomes] == [Status.HANDLED, Status.FAILED, Status.HANDLED]
    assert "database rejected it" in outcomes[1].error
    assert runs_per_key() == {"split/one.txt": 1, "split/three.txt": 1}
