"""What the worker does with each kind of failure (against the in-memory SQS stand-in): a
permanent failure is deleted at once, a handler this process lacks is released soon, an
outage stops receiving until a probe says the service is back, and a shutdown that abandons
work says which messages and exits non-zero."""

from __future__ import annotations

import threading
import time

import pytest

from s3tasks.processing.messages import InboundMessage, MessageOutcome, Status
from s3tasks.worker.memory_sqs import MemorySQS
from tests.worker_support import Recorder, consumer, make_queue


def send(sqs: MemorySQS, url: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)


def test_a_message_whose_handlers_failed_for_good_is_deleted_at_once():
    sqs = MemorySQS()
    url = make_queue(sqs)
    send(sqs, url, "perm", "ok")
    process = Recorder(answers={"perm": [Status.FAILED_PERMANENTLY]})
    final = consumer(sqs, process).run()
    assert (final.failed_permanently, final.handled, final.deleted) == (1, 1, 2)
    assert sqs.counts(url) == (0, 0)
    assert len(process.calls) == 2  # received once, never again


def test_a_message_for_a_handler_this_process_lacks_is_released_soon_not_backed_off():
    sqs = MemorySQS()
    url = make_queue(sqs)
    send(sqs, url, "elsewhere")
    process = Recorder(answers={"elsewhere": [Status.DEFERRED]})
    worker = consumer(sqs, process, defer_release=1, exit_when_idle=2.5, backoff_base=60)
    began = time.monotonic()
    final = worker.run()
    assert final.deferred == 1 and final.handled == 1 and final.failed == 0
    assert [m.receive_count for m in process.calls] == [1, 2]
    assert time.monotonic() - began < 10  # 1 s release, not the 60 s failure backoff


def test_a_message_deferred_again_and_again_backs_off_up_to_the_visibility_timeout():
    # Every receive counts towards maxReceiveCount: while only old workers run during a deploy,
    # releasing every 2 s would send a new handler's events to the DLQ within a minute.
    sqs = MemorySQS()
    url = make_queue(sqs)
    send(sqs, url, "elsewhere")
    released: list[int] = []
    original = sqs.change_message_visibility_batch

    def spy(QueueUrl: str, Entries: list[dict]) -> dict:
        released.extend(e["VisibilityTimeout"] for e in Entries)
        # make it visible again at once, so the test need not wait out the delays
        return original(QueueUrl=QueueUrl, Entries=[{**e, "VisibilityTimeout": 0} for e in Entries])

    sqs.change_message_visibility_batch = spy
    process = Recorder(answers={"elsewhere": [Status.DEFERRED] * 6})
    worker = consumer(sqs, process, defer_release=2, visibility_timeout=20, exit_when_idle=1)
    final = worker.run()
    assert final.deferred == 6 and final.handled == 1
    assert released == [2, 4, 8, 16, 20, 20]


class Outage:
    """A batch processor that finds the database down until `back()` (then handles)."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.down.set()
        self.calls: list[str] = []
        self.probes = 0

    def __call__(self, message: InboundMessage, dispatch_mode: str | None = None) -> MessageOutcome:
        self.calls.append(str(message.body))
        if self.down.is_set():
            return MessageOutcome(message.message_id, Status.UNAVAILABLE, error="db down")
        return MessageOutcome(message.message_id, Status.HANDLED, events=1)

    def probe(self) -> str | None:
        self.probes += 1
        return "database 'default' unreachable" if self.down.is_set() else None


def test_an_outage_stops_receiving_until_the_probe_succeeds_then_resumes(caplog):
    sqs = MemorySQS()
    url = make_queue(sqs, RedrivePolicy='{"maxReceiveCount": "3", "deadLetterTargetArn": "x"}')
    send(sqs, url, *[f"m{i}" for i in range(6)])
    outage = Outage()
    client_consumer = consumer(
        sqs, outage, concurrency=2, batch_size=1, outage_release=0, exit_when_idle=None
    )
    client_consumer.gate = type(client_consumer.gate)(outage.probe, first_wait=0.2, max_wait=0.4)
    receives = []
    original = sqs.receive_message

    def counting_receive(**kwargs):
        receives.append(time.monotonic())
        return original(**kwargs)

    sqs.receive_message = counting_receive  # type: ignore[method-assign]
    runner = threading.Thread(target=client_consumer.run)
    runner.start()
    deadline = time.monotonic() + 5
    while client_consumer.gate.is_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not client_consumer.gate.is_open
    time.sleep(0.3)  # let the receivers see the closed gate
    received_during_outage = len(receives)
    time.sleep(1.5)
    assert len(receives) == received_during_outage  # nothing received while down
    assert outage.probes >= 2
    outage.down.clear()
    deadline = time.monotonic() + 10
    while sqs.counts(url) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    client_consumer.stop()
    runner.join(10)
    assert sqs.counts(url) == (0, 0)
    handled = {body for body in outage.calls[-6:]}
    assert handled == {f"m{i}" for i in range(6)}
    text = caplog.text
    assert text.count("stopped receiving") == 1 and text.count("back after") == 1


def test_a_shutdown_that_abandons_in_flight_work_releases_it_and_counts_it(caplog):
    sqs = MemorySQS()
    url = make_queue(sqs)
    send(sqs, url, "slow-1", "slow-2")
    worker = consumer(
        sqs, Recorder(delay=3), concurrency=2, exit_when_idle=None, shutdown_timeout=0.5
    )
    runner = threading.Thread(target=lambda: setattr(worker, "final", worker.run()))
    runner.start()
    deadline = time.monotonic() + 5
    while len(worker.inflight) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    runner.join(10)
    assert worker.final.abandoned == 2
    assert sqs.counts(url) == (2, 0)  # visible again at once, not after the visibility timeout
    assert "released 2 for redelivery" in caplog.text


@pytest.mark.django_db
def test_sqs_worker_exits_3_when_shutdown_abandons_work(monkeypatch):
    from django.core.management import CommandError, call_command

    from s3tasks.worker import StatsSnapshot

    class Abandoning:
        def run(self, install_signal_handlers: bool = False) -> StatsSnapshot:
            return StatsSnapshot(received=1, abandoned=1)

    from s3tasks.management.commands import sqs_worker

    monkeypatch.setattr(sqs_worker, "build_consumer", lambda *a, **k: Abandoning())
    monkeypatch.setattr("s3tasks.aws.client", lambda name: None)
    with pytest.raises(CommandError, match="abandoned 1 in-flight") as raised:
        call_command("sqs_worker", "--queue", "q", "--shutdown-timeout", "1")
    assert raised.value.returncode == 3


@pytest.mark.django_db(transaction=True)
def test_a_locked_database_fails_a_batch_as_unavailable_in_one_line_without_tracebacks(caplog):
    """A real database error (SQLite's write lock held by another connection): every message
    is `unavailable`, logged once, and not retried one by one."""
    import sqlite3

    from django.db import connection

    from s3tasks.processing.messages import process_messages
    from tests.worker_app.handlers import COUNT
    from tests.worker_support import bind, s3_body

    if connection.vendor != "sqlite":
        pytest.skip("the PostgreSQL outage is tested by the chaos tests")
    bind(COUNT, "outage-bucket")
    messages = [InboundMessage(f"m{i}", s3_body("outage-bucket", f"k{i}.txt")) for i in range(3)]
    connection.close()
    options = connection.settings_dict["OPTIONS"]
    saved = dict(options)
    options["timeout"] = 0.2
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        outcomes = process_messages(messages, dispatch_mode="inline")
    finally:
        holder.close()
        connection.close()
        options.clear()
        options.update(saved)
    assert [o.status for o in outcomes] == [Status.UNAVAILABLE] * 3
    assert all("database is locked" in o.error for o in outcomes)
    dispatch_logs = [r for r in caplog.records if r.name == "s3tasks.processing.messages"]
    assert len(dispatch_logs) == 1 and dispatch_logs[0].exc_info is None


def test_a_fractional_count_is_refused_in_settings_and_in_options(settings):
    from s3tasks.conf import build_settings
    from s3tasks.exceptions import S3TasksConfigurationError
    from s3tasks.worker import WorkerOptions

    with pytest.raises(S3TasksConfigurationError, match="CONCURRENCY"):
        build_settings({"WORKER": {"CONCURRENCY": 2.5}})
    with pytest.raises(ValueError, match="--concurrency must be a whole number"):
        WorkerOptions(concurrency=2.5).validated()
    assert WorkerOptions().concurrency == build_settings({}).WORKER.CONCURRENCY


def test_after_an_outage_each_worker_thread_reconnects_before_its_next_batch(monkeypatch):
    """Connections kept across the outage (CONN_MAX_AGE) are dead: a thread that reused one
    would report the outage again and flap the gate."""
    from s3tasks.worker import loop

    closed: list[str] = []
    monkeypatch.setattr(
        loop.connections, "close_all", lambda: closed.append(threading.current_thread().name)
    )
    sqs = MemorySQS()
    url = make_queue(sqs)
    worker = consumer(sqs, Recorder(), concurrency=1, exit_when_idle=1.0)
    worker.gate.outages = 1  # an outage happened (and ended) before these messages arrived
    send(sqs, url, "after-1", "after-2")
    worker.run()
    # once for the outage before the first batch, once when the thread ends
    assert closed.count("s3tasks-worker-0") == 2
