"""Metrics without a network (docs/metrics.md): event lag, run observations from the lifecycle
signals, the worker's counters per queue, the oldest-age estimate, the Celery hook, the missing
package, and the Lambda entrypoint's CloudWatch EMF lines checked against the specification."""

from __future__ import annotations

import io
import json
import logging
import sys
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from lambda_app.handlers import CALLS
from payload_files import load_payload

from s3tasks import signals
from s3tasks.conf import NAMESPACE_PATTERN, build_settings
from s3tasks.events import EventSource
from s3tasks.exceptions import ImproperlyInstalled, S3TasksConfigurationError
from s3tasks.lambda_handler import handler
from s3tasks.ops.metrics import emf
from s3tasks.ops.metrics.celery_workers import start_celery_metrics
from s3tasks.ops.metrics.prometheus import import_prometheus, prometheus_metrics
from s3tasks.ops.metrics.runs import (
    RunObservation,
    add_sink,
    event_lag_seconds,
    observation,
    remove_sink,
)
from s3tasks.processing.messages import Status
from s3tasks.rules.routing import router
from s3tasks.worker.memory_sqs import MemorySQS
from s3tasks.worker.metrics import WorkerMetrics
from s3tasks.worker.sqs import QueueDepth, QueueRef, ReceivedMessage
from s3tasks.worker.stats import WorkerStats
from tests.factories import make_event
from tests.worker_support import Recorder, consumer, make_queue

CHANGED = datetime(2026, 5, 4, 9, 0, 0, tzinfo=UTC)


def sample(name: str, **labels: str) -> float:
    """A sample of s3tasks' registry (0 when it has not been recorded yet)."""
    value = prometheus_metrics().registry.get_sample_value(name, labels)
    return value or 0.0


def fake_run(handler: str = "app.h", duration_ms: float | None = 250.0, finished=None) -> Any:
    finished_at = finished or CHANGED + timedelta(seconds=3)
    return SimpleNamespace(handler_name=handler, duration_ms=duration_ms, finished_at=finished_at)


def changed_event(**changes: Any):
    return replace(make_event("lag.csv"), **{"event_time": CHANGED, **changes})


# --- event lag -------------------------------------------------------------------------------


def test_event_lag_is_the_seconds_from_the_s3_change_to_the_end_of_the_run():
    finished = CHANGED + timedelta(seconds=2, milliseconds=500)
    assert event_lag_seconds(changed_event(), finished) == 2.5
    assert event_lag_seconds(changed_event(source=EventSource.SNS), finished) == 2.5


def test_event_lag_is_zero_when_our_clock_is_behind_s3s():
    assert event_lag_seconds(changed_event(), CHANGED - timedelta(seconds=1)) == 0.0


@pytest.mark.parametrize(
    "source", [EventSource.BACKFILL, EventSource.BATCH_OPERATIONS, EventSource.ADMIN]
)
def test_event_lag_is_not_measured_for_events_whose_time_is_not_a_change(source):
    assert event_lag_seconds(changed_event(source=source), CHANGED + timedelta(hours=1)) is None


def test_event_lag_without_an_event_time_is_none():
    assert event_lag_seconds(changed_event(event_time=None), CHANGED) is None


def test_event_lag_reads_a_naive_finish_time_as_django_local_time(settings):
    settings.TIME_ZONE = "Europe/Paris"  # UTC+2 in May
    naive_local = datetime(2026, 5, 4, 11, 0, 4)
    assert event_lag_seconds(changed_event(), naive_local) == 4.0


def test_a_retrying_attempt_has_a_duration_but_no_lag_as_its_run_has_not_ended():
    seen = observation(fake_run(), changed_event(), "retrying")
    assert seen == RunObservation("app.h", "retrying", 0.25, None)
    assert observation(fake_run(), changed_event(), "failed").lag_seconds == 3.0


# --- run observations from the signals --------------------------------------------------------


def test_the_lifecycle_signals_become_observations_with_their_outcome():
    seen: list[RunObservation] = []
    add_sink(seen.append)
    try:
        event = changed_event()
        signals.run_succeeded.send(sender="app.h", run=fake_run(), event=event, result=None)
        error = RuntimeError("x")
        signals.run_failed.send(
            sender="app.h", run=fake_run(), event=event, exception=error, permanent=False
        )
        signals.run_failed.send(
            sender="app.h", run=fake_run(), event=event, exception=error, permanent=True
        )
    finally:
        remove_sink(seen.append)
    assert [s.outcome for s in seen] == ["succeeded", "retrying", "failed"]
    assert [s.lag_seconds for s in seen] == [3.0, None, 3.0]


def test_a_failing_sink_never_breaks_the_signal_that_reports_a_run(caplog):
    def broken(seen: RunObservation) -> None:
        raise ValueError("metrics bug")

    add_sink(broken)
    try:
        signals.run_succeeded.send(
            sender="app.h", run=fake_run(), event=changed_event(), result=None
        )
    finally:
        remove_sink(broken)
    assert "a metrics sink failed" in caplog.text


def test_prometheus_counts_runs_and_observes_duration_and_lag_per_handler():
    metrics = prometheus_metrics()
    labels = {"handler": "tests.metrics.unit"}
    before = sample("s3tasks_event_lag_seconds_count", **labels)
    metrics.record_run(RunObservation("tests.metrics.unit", "succeeded", 0.02, 42.0))
    metrics.record_run(RunObservation("tests.metrics.unit", "retrying", 0.5, None))

    assert sample("s3tasks_handler_runs_total", outcome="succeeded", **labels) >= 1
    assert sample("s3tasks_handler_runs_total", outcome="retrying", **labels) >= 1
    assert sample("s3tasks_event_lag_seconds_count", **labels) == before + 1
    assert sample("s3tasks_event_lag_seconds_bucket", le="30.0", **labels) < sample(
        "s3tasks_event_lag_seconds_bucket", le="60.0", **labels
    )
    assert sample("s3tasks_handler_duration_seconds_bucket", le="0.025", **labels) >= 1


# --- the worker's counters -------------------------------------------------------------------


def test_worker_counters_are_per_queue_and_per_outcome():
    sqs = MemorySQS()
    make_queue(sqs, "metrics-a")
    url_b = make_queue(sqs, "metrics-b")
    for i in range(3):
        sqs.send_message(QueueUrl=url_b, MessageBody=f"ok{i}")
    sqs.send_message(QueueUrl=url_b, MessageBody="bad")
    sqs.send_message(QueueUrl=url_b, MessageBody="later")
    answers = {"bad": [Status.MALFORMED], "later": [Status.DEFERRED]}
    worker = consumer(sqs, Recorder(answers=answers), "metrics-a", "metrics-b")
    before = {
        outcome: sample("s3tasks_messages_finished_total", queue="metrics-b", outcome=outcome)
        for outcome in ("handled", "malformed", "deferred")
    }
    received = sample("s3tasks_messages_received_total", queue="metrics-b")
    deleted = sample("s3tasks_messages_deleted_total", queue="metrics-b")
    WorkerMetrics(worker, prometheus_metrics()).attach()

    worker.run()

    assert sample("s3tasks_messages_received_total", queue="metrics-b") - received >= 5
    assert sample("s3tasks_messages_received_total", queue="metrics-a") == 0
    finished = {
        outcome: sample("s3tasks_messages_finished_total", queue="metrics-b", outcome=outcome)
        - before[outcome]
        for outcome in before
    }
    assert finished["handled"] == 3 and finished["malformed"] >= 1 and finished["deferred"] >= 1
    assert sample("s3tasks_messages_deleted_total", queue="metrics-b") - deleted == 3
    assert sample("s3tasks_events_total", queue="metrics-b") >= 3
    assert sample("s3tasks_messages_in_flight", queue="metrics-b") == 0
    assert sample("s3tasks_worker_outage") == 0
    info = {"version": "0.1.0", "queues": "metrics-a,metrics-b", "dispatch": ""}
    assert sample("s3tasks_worker_info", **info) == 1


def test_worker_stats_tell_observers_only_counts_made_for_a_queue():
    calls: list[tuple[str, str, int]] = []
    stats = WorkerStats()
    stats.observe(SimpleNamespace(counted=lambda *a: calls.append(a), received=None))
    stats.add("abandoned", 2)  # the total alone: no queue
    stats.add("handled", queue="q1")
    stats.add("events", 0, queue="q1")  # nothing to tell
    assert calls == [("handled", "q1", 1)]
    assert stats.snapshot().abandoned == 2


# --- the oldest-age estimate -----------------------------------------------------------------


class DepthStub:
    """A `SqsQueueClient` stand-in answering `depth` with what the test sets."""

    def __init__(self) -> None:
        self.visible = 0
        self.fail = False

    def depth(self, url: str) -> QueueDepth:
        if self.fail:
            raise ConnectionError("SQS unreachable")
        return QueueDepth(visible=self.visible, in_flight=1, delayed=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def age_setup(name: str) -> tuple[WorkerMetrics, DepthStub, Clock, QueueRef]:
    queue = QueueRef(name=name, url=f"https://sqs.test/1/{name}")
    sqs, clock = DepthStub(), Clock()
    fake = SimpleNamespace(queues=[queue], sqs=sqs)
    return WorkerMetrics(fake, prometheus_metrics(), clock=clock), sqs, clock, queue  # type: ignore[arg-type]


def sent(queue: QueueRef, seconds_ago: float, clock: Clock) -> ReceivedMessage:
    stamp = str(int((clock.now - seconds_ago) * 1000))
    return ReceivedMessage(queue, "m", "r", "{}", attributes={"SentTimestamp": stamp})


def test_oldest_age_is_the_oldest_received_since_the_last_poll_then_zero_when_empty():
    metrics, sqs, clock, queue = age_setup("age-a")
    metrics.received(queue, [sent(queue, 4, clock), sent(queue, 9, clock)])
    metrics.received(queue, [sent(queue, 2, clock)])
    sqs.visible = 0
    metrics.poll()
    assert sample("s3tasks_queue_oldest_message_age_seconds", queue="age-a") == 9.0
    assert sample("s3tasks_queue_messages", queue="age-a", state="in_flight") == 1

    clock.now += 15
    metrics.poll()  # nothing received, nothing waiting
    assert sample("s3tasks_queue_oldest_message_age_seconds", queue="age-a") == 0.0


def test_oldest_age_grows_while_messages_wait_and_this_worker_takes_none():
    metrics, sqs, clock, queue = age_setup("age-b")
    metrics.received(queue, [sent(queue, 5, clock)])
    sqs.visible = 30
    metrics.poll()
    clock.now += 15
    metrics.poll()
    clock.now += 15
    metrics.poll()
    assert sample("s3tasks_queue_oldest_message_age_seconds", queue="age-b") == 35.0


def test_a_failed_poll_keeps_the_gauges_and_counts_the_error(caplog):
    metrics, sqs, clock, queue = age_setup("age-c")
    sqs.visible = 7
    metrics.poll()
    sqs.fail = True
    errors = sample("s3tasks_queue_poll_errors_total", queue="age-c")
    with caplog.at_level(logging.WARNING, logger="s3tasks.worker"):
        metrics.poll()
        metrics.poll()
    assert sample("s3tasks_queue_messages", queue="age-c", state="visible") == 7
    assert sample("s3tasks_queue_poll_errors_total", queue="age-c") == errors + 2
    assert caplog.text.count("could not read the depth") == 1  # then quiet until it recovers


# --- the missing package ---------------------------------------------------------------------


def test_without_prometheus_client_the_error_names_the_metrics_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImproperlyInstalled) as caught:
        import_prometheus()
    assert (caught.value.missing_package, caught.value.install_extra) == (
        "prometheus_client",
        "metrics",
    )
    assert "pip install 's3tasks[metrics]'" in str(caught.value)


@pytest.mark.django_db
def test_sqs_worker_refuses_metrics_port_without_the_package_before_consuming(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(CommandError, match=r"s3tasks\[metrics\]"):
        call_command("sqs_worker", "--queue", "never-resolved", "--metrics-port", "9")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--metrics-port", "70000"], "0..65535"),
        (["--metrics-port", "0", "--metrics-poll", "0"], "--metrics-poll"),
    ],
)
@pytest.mark.django_db
def test_sqs_worker_refuses_wrong_metrics_flags(flags, message):
    with pytest.raises(CommandError, match=message):
        call_command("sqs_worker", "--queue", "never-resolved", *flags)


# --- Celery workers --------------------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_celery_hook_serves_the_runs_of_its_process(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    server = start_celery_metrics(0, "127.0.0.1", pool="solo")
    try:
        signals.run_succeeded.send(
            sender="tests.metrics.celery",
            run=fake_run("tests.metrics.celery"),
            event=changed_event(),
            result=None,
        )
        text = scrape(server.port)
    finally:
        server.close()
    assert 's3tasks_handler_runs_total{handler="tests.metrics.celery",outcome="succeeded"}' in text


def test_celery_hook_warns_that_prefork_children_need_the_multiprocess_directory(
    monkeypatch, caplog
):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with caplog.at_level(logging.WARNING, logger="s3tasks"):
        server = start_celery_metrics(0, "127.0.0.1", pool="prefork")
    server.close()
    assert "set PROMETHEUS_MULTIPROC_DIR" in caplog.text


# --- Lambda: CloudWatch Embedded Metric Format ------------------------------------------------

# CloudWatch's units (StandardUnit)
EMF_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def assert_emf(document: dict[str, Any]) -> None:
    """Fail unless `document` follows the Embedded Metric Format specification."""
    meta = document["_aws"]
    assert set(meta) <= {"Timestamp", "CloudWatchMetrics", "LogGroupName"}
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_500_000_000_000  # ms
    assert isinstance(meta["CloudWatchMetrics"], list) and meta["CloudWatchMetrics"]
    for directive in meta["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert NAMESPACE_PATTERN.fullmatch(directive["Namespace"])
        for dimension_set in directive["Dimensions"]:
            assert isinstance(dimension_set, list) and len(dimension_set) <= 30
            for key in dimension_set:
                value = document[key]  # every dimension is a root member holding a string
                assert isinstance(value, str) and value.strip() and value.isascii()
                assert len(value) <= 1024 and not key.startswith(":")
        assert 0 < len(directive["Metrics"]) <= 100
        for definition in directive["Metrics"]:
            assert set(definition) <= {"Name", "Unit", "StorageResolution"}
            assert definition.get("Unit", "None") in EMF_UNITS
            value = document[definition["Name"]]  # the target member
            values = value if isinstance(value, list) else [value]
            assert 0 < len(values) <= 100
            assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def emf_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"')]


def test_emf_document_follows_the_specification_and_holds_counts_and_values():
    metrics = emf.InvocationMetrics("s3tasks", {"FunctionName": "uploads"}, {"requestId": "r1"})
    metrics.count_messages(["handled", "test_event", "failed", "malformed", "released"])
    metrics.observe_run(RunObservation("app.a", "succeeded", 0.012, 3.5))
    metrics.observe_run(RunObservation("app.b", "retrying", 0.2, None))

    [document] = metrics.documents(timestamp_ms=1_777_000_000_000)

    assert_emf(document)
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName"]]
    assert document["FunctionName"] == "uploads" and document["requestId"] == "r1"
    assert (document["MessagesReceived"], document["MessagesDeleted"]) == (5, 2)
    assert (document["MessagesHandled"], document["MessagesFailed"]) == (2, 1)
    assert (document["MessagesMalformed"], document["MessagesReleased"]) == (1, 1)
    assert document["HandlerRunsSucceeded"] == 1 and document["HandlerRunsRetrying"] == 1
    assert document["HandlerDuration"] == [0.012, 0.2] and document["EventLag"] == [3.5]
    assert document["handlers"]["app.b"] == {"succeeded": 0, "retrying": 1, "failed": 0}


def test_emf_puts_values_past_100_on_further_lines():
    metrics = emf.InvocationMetrics("s3tasks", {"FunctionName": "f"})
    for i in range(250):
        metrics.observe_run(RunObservation("app.a", "succeeded", i / 1000, None))

    documents = metrics.documents()

    assert [len(d["HandlerDuration"]) for d in documents] == [100, 100, 50]
    for document in documents:
        assert_emf(document)
    assert "HandlerRunsSucceeded" not in documents[1]  # counts only once per invocation
    assert documents[0]["HandlerRunsSucceeded"] == 250


@pytest.mark.parametrize("bad", ["", "AWS/Lambda", "has space", "x" * 256, 5])
def test_metrics_namespace_must_be_one_cloudwatch_accepts(bad):
    with pytest.raises(S3TasksConfigurationError, match="METRICS_NAMESPACE"):
        build_settings({"METRICS_NAMESPACE": bad})


def test_emf_off_prints_nothing():
    out = io.StringIO()
    with emf.invocation(None, stream=out) as metrics:
        emf.count_messages(["handled"])
    assert metrics is None and out.getvalue() == ""


@pytest.fixture
def lambda_rules():
    from s3tasks.models import Bucket, HandlerBinding, NotificationRule

    router.invalidate()
    CALLS.clear()
    row = Bucket.objects.create(name="acme-uploads")
    rule = NotificationRule.objects.create(bucket=row, events=["s3:ObjectCreated:*"])
    HandlerBinding.objects.create(rule=rule, handler_name="lambda_tests.record")
    yield
    router.invalidate()
    CALLS.clear()


class FakeContext:
    function_name = "s3tasks-uploads"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.mark.django_db
def test_lambda_invocation_prints_one_emf_line_with_its_messages_and_runs(
    lambda_rules, capsys, settings
):
    settings.S3TASKS = {**settings.S3TASKS, "METRICS_NAMESPACE": "myapp/s3tasks"}
    batch = load_payload("lambda_sqs_mixed")
    malformed = {**batch["Records"][0], "messageId": "bad-1", "body": "not an S3 event"}
    batch["Records"] = [batch["Records"][0], batch["Records"][2], malformed]

    response = handler(batch, FakeContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    [line] = emf_lines(capsys.readouterr().out)
    assert_emf(line)
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "myapp/s3tasks"
    assert line["FunctionName"] == "s3tasks-uploads"
    assert line["requestId"] == FakeContext.aws_request_id
    assert (line["MessagesReceived"], line["MessagesDeleted"]) == (3, 2)
    assert (line["MessagesHandled"], line["MessagesMalformed"]) == (2, 1)
    assert line["HandlerRunsSucceeded"] == 1
    assert len(line["HandlerDuration"]) == 1 and len(line["EventLag"]) == 1
    assert line["handlers"] == {"lambda_tests.record": {"succeeded": 1, "retrying": 0, "failed": 0}}


@pytest.mark.django_db
def test_lambda_invocation_that_raises_still_prints_its_line(lambda_rules, capsys):
    with pytest.raises(Exception, match="accepts"):
        handler({"not": "a trigger"}, FakeContext())

    [line] = emf_lines(capsys.readouterr().out)
    assert (line["MessagesReceived"], line["MessagesMalformed"]) == (1, 1)


@pytest.mark.django_db
def test_lambda_with_metrics_namespace_none_prints_no_line(lambda_rules, capsys, settings):
    settings.S3TASKS = {**settings.S3TASKS, "METRICS_NAMESPACE": None}
    batch = load_payload("lambda_sqs_mixed")
    batch["Records"] = [batch["Records"][0]]

    handler(batch, FakeContext())

    assert emf_lines(capsys.readouterr().out) == []
