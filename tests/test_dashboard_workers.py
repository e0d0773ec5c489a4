"""Live workers on the operations dashboard: each worker's `WorkerHeartbeat` row, written at
start and every interval by the worker loop (on the in-memory SQS), deleted on a clean
shutdown, left alone during a database outage, shown as gone once stale, pruned a day later."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

import s3tasks
from s3tasks.models import WorkerHeartbeat
from s3tasks.ops.queue_depths import forget_queue_depths
from s3tasks.worker import Consumer, SqsQueueClient, WorkerOptions, build_consumer
from s3tasks.worker.memory_sqs import MemorySQS
from s3tasks.worker.presence import WorkerPresence
from s3tasks.worker.stats import StatsSnapshot
from tests.admin_support import login_staff
from tests.worker_support import QUICK, Recorder, make_queue, wait_until

URL = "/admin/s3tasks/operationsdashboard/"
INTERVAL = 0.2


def running(consumer: Consumer) -> threading.Thread:
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    return thread


def worker_on(sqs: MemorySQS, presence: WorkerPresence, **kwargs) -> Consumer:
    """A consumer of queue "jobs" that runs until stopped."""
    client = SqsQueueClient(sqs)
    options = WorkerOptions(**{**QUICK, "exit_when_idle": None, "dispatch": "inline"})
    return Consumer(
        client, [client.resolve("jobs")], options, process=Recorder(), presence=presence, **kwargs
    )


def row(presence: WorkerPresence) -> WorkerHeartbeat | None:
    return WorkerHeartbeat.objects.filter(worker_id=presence.worker_id).first()


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_row_while_it_runs_and_deletes_it_on_a_clean_shutdown():
    sqs = MemorySQS()
    url = make_queue(sqs)
    presence = WorkerPresence(["jobs"], "inline", 4, interval=INTERVAL)
    consumer = worker_on(sqs, presence)
    thread = running(consumer)
    first = wait_until(lambda: row(presence), 5, "the row written at start")
    assert (first.host, first.pid, first.queues) == (socket.gethostname(), os.getpid(), ["jobs"])
    assert (first.version, first.dispatch, first.concurrency) == (s3tasks.__version__, "inline", 4)
    assert first.interval == INTERVAL
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    later = wait_until(
        lambda: (r := row(presence)) and r.counters.get("handled") == 5 and r, 5, "counters"
    )
    assert later.counters["received"] == 5 and later.last_seen_at > first.last_seen_at
    assert later.started_at == first.started_at
    consumer.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert row(presence) is None


@pytest.mark.django_db(transaction=True)
def test_during_a_database_outage_the_row_is_not_written_and_is_left_to_go_stale():
    sqs = MemorySQS()
    make_queue(sqs)
    presence = WorkerPresence(["jobs"], "inline", 1, interval=INTERVAL)
    consumer = worker_on(sqs, presence, probe=lambda: "database down")
    thread = running(consumer)
    wait_until(lambda: row(presence), 5, "the row written at start")
    consumer.gate.report("database down")  # as the first batch that finds it unreachable would
    seen = row(presence).last_seen_at
    threading.Event().wait(INTERVAL * 4)
    assert row(presence).last_seen_at == seen
    consumer.stop()
    thread.join(10)
    stale = row(presence)
    assert stale is not None  # no attempt to delete it while the database is down
    assert stale.is_gone(seen + timedelta(seconds=INTERVAL * 3.1))
    assert not stale.is_gone(seen + timedelta(seconds=INTERVAL * 2.9))


@pytest.mark.django_db(transaction=True)
def test_a_failing_write_is_logged_and_the_worker_goes_on(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(WorkerHeartbeat.objects, "filter", broken)
    sqs = MemorySQS()
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    presence = WorkerPresence(["jobs"], "inline", 1, interval=INTERVAL)
    client = SqsQueueClient(sqs)
    options = WorkerOptions(**QUICK)
    with caplog.at_level(logging.WARNING, logger="s3tasks.worker"):
        final = Consumer(
            client, [client.resolve("jobs")], options, process=Recorder(), presence=presence
        ).run()
    assert final.handled == 1
    assert "could not write its heartbeat row: connection refused" in caplog.text
    assert "could not delete its heartbeat row: connection refused" in caplog.text


@pytest.mark.django_db(transaction=True)  # a beat closes its thread's old connections
def test_a_live_workers_beat_prunes_rows_gone_for_a_day():
    now = timezone.now()
    old = WorkerHeartbeat.objects.create(
        worker_id="old", host="h", pid=1, interval=15, last_seen_at=now - timedelta(hours=25)
    )
    recent = WorkerHeartbeat.objects.create(
        worker_id="recent", host="h", pid=2, interval=15, last_seen_at=now - timedelta(hours=2)
    )
    presence = WorkerPresence(["jobs"], "celery", 2)
    presence.beat(StatsSnapshot(received=3))
    assert set(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == {
        recent.worker_id,
        presence.worker_id,
    }
    assert not WorkerHeartbeat.objects.filter(pk=old.pk).exists()
    assert row(presence).counters["received"] == 3


@pytest.mark.django_db(transaction=True)
def test_sqs_worker_wiring_gives_every_worker_a_row():
    sqs = MemorySQS()
    make_queue(sqs)
    options = WorkerOptions(**{**QUICK, "exit_when_idle": None, "dispatch": "inline"})
    consumer = build_consumer(sqs, ["jobs"], options, process=Recorder(), cleanup=None)
    thread = running(consumer)
    found = wait_until(lambda: WorkerHeartbeat.objects.first(), 5, "the worker's row")
    assert (found.queues, found.dispatch, found.concurrency) == (["jobs"], "inline", 4)
    consumer.stop()
    thread.join(10)
    assert not WorkerHeartbeat.objects.exists()


@pytest.mark.django_db
def test_the_dashboard_lists_live_and_gone_workers(client, django_user_model, settings):
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": "http://127.0.0.1:9"}
    forget_queue_depths()
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        worker_id="live",
        host="web-1",
        pid=101,
        queues=["uploads"],
        version="1.2.3",
        dispatch="celery",
        concurrency=8,
        interval=15,
        started_at=now - timedelta(hours=1),
        last_seen_at=now - timedelta(seconds=40),  # within 3 × 15 s
        counters={"received": 120, "handled": 118, "failed": 2, "in_flight": 3},
    )
    WorkerHeartbeat.objects.create(
        worker_id="dead",
        host="web-2",
        pid=202,
        interval=15,
        last_seen_at=now - timedelta(minutes=2),
    )
    login_staff(client, django_user_model, "s3tasks.view_handlerrun")
    html = client.get(URL).content.decode()
    live = html.split('data-worker="live"')[1].split("</tr>")[0]
    dead = html.split('data-worker="dead"')[1].split("</tr>")[0]
    assert ">live<" in live and "web-1" in live and "uploads" in live and "celery × 8" in live
    assert "received 120 · handled 118 · failed 2 · in flight 3" in live
    assert re.search(r">4\d s ago<", live)  # 40 s, and a moment for the request
    assert ">gone<" in dead and "2 min ago" in dead
    assert 'id="s3tasks-summary-workers"><strong>1</strong>' in html
    assert "(1 gone)" in html
    forget_queue_depths()
