"""`s3tasks.lambda_handler.handler` called directly with every trigger shape."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from lambda_app.handlers import CALLS
from payload_files import load_payload

from s3tasks.conf import build_settings
from s3tasks.exceptions import MalformedMessage, S3TasksConfigurationError
from s3tasks.lambda_handler import HandlersFailed, handler
from s3tasks.models import Bucket, HandlerBinding, HandlerRun, NotificationRule, RunState
from s3tasks.rules.routing import router

pytestmark = pytest.mark.django_db

SNS_MESSAGE_ID = "2e1424d4-f796-459a-8184-9c92662be6da"  # acme-media photos/ in the mixed batch


class FakeContext:
    """What Lambda passes as `context`: a request id and the remaining time."""

    def __init__(self, remaining_ms: Iterator[int] | None = None) -> None:
        self.aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
        self._remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return next(self._remaining) if self._remaining is not None else 300_000


def bind(bucket: str, handler_name: str, prefix: str = "") -> None:
    """Route the bucket's created objects under `prefix` to a test handler."""
    row, _ = Bucket.objects.get_or_create(name=bucket)
    rule = NotificationRule.objects.create(bucket=row, events=["s3:ObjectCreated:*"], prefix=prefix)
    HandlerBinding.objects.create(rule=rule, handler_name=handler_name)


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    router.invalidate()  # rules of an earlier (rolled back) test must not linger in the cache
    CALLS.clear()
    yield
    router.invalidate()
    CALLS.clear()


def sqs_record(message_id: str, body: str) -> dict[str, Any]:
    template = load_payload("lambda_sqs_mixed")["Records"][0]
    return {**template, "messageId": message_id, "body": body}


def test_sqs_batch_reports_exactly_the_failed_and_the_malformed_message() -> None:
    bind("acme-uploads", "lambda_tests.record")
    bind("acme-media", "lambda_tests.explode", prefix="photos/")
    bind("acme-media", "lambda_tests.record", prefix="exports/")
    batch = load_payload("lambda_sqs_mixed")
    batch["Records"].append(sqs_record("malformed-1", "this is not an S3 event"))

    response = handler(batch, FakeContext())

    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    assert failed == {SNS_MESSAGE_ID, "malformed-1"}
    assert sorted(CALLS) == [
        ("explode", "photos/summer/sunset.jpg"),
        ("record", "exports/daily.parquet"),
        ("record", "inbox/order #981.csv"),  # decoded once: "+" is a space, %23 a "#"
    ]


def test_sqs_batch_that_all_succeeds_reports_no_failures_and_records_runs() -> None:
    bind("acme-uploads", "lambda_tests.record")
    batch = load_payload("lambda_sqs_mixed")
    batch["Records"] = [batch["Records"][0], batch["Records"][2]]  # an event and a test event

    assert handler(batch, FakeContext()) == {"batchItemFailures": []}
    run = HandlerRun.objects.get(handler_name="lambda_tests.record")
    assert run.state == RunState.SUCCEEDED
    assert run.result_summary == "handled inbox/order #981.csv"
    assert run.event.queue_name == "s3tasks-events"


def test_duplicate_deliveries_in_one_batch_run_the_handler_once() -> None:
    bind("acme-uploads", "lambda_tests.record")
    body = load_payload("lambda_sqs_mixed")["Records"][0]["body"]
    batch = {"Records": [sqs_record("first", body), sqs_record("again", body)]}

    assert handler(batch, FakeContext()) == {"batchItemFailures": []}
    assert handler(batch, FakeContext()) == {"batchItemFailures": []}  # and a redelivery
    assert CALLS == [("record", "inbox/order #981.csv")]


def test_records_not_started_before_the_time_margin_are_reported_for_redelivery(
    settings,
) -> None:
    from s3tasks.lambda_handler import SQS_CHUNK

    settings.S3TASKS = {**settings.S3TASKS, "LAMBDA_TIME_MARGIN_MS": 5_000}
    bind("acme-uploads", "lambda_tests.record")
    template = json.loads(load_payload("lambda_sqs_mixed")["Records"][0]["body"])
    records = []
    total = 2 * SQS_CHUNK + 3
    for i in range(total):
        body = copy.deepcopy(template)
        body["Records"][0]["s3"]["object"]["key"] = f"inbox/file-{i}.csv"
        records.append(sqs_record(f"m{i}", json.dumps(body)))
    remaining = iter([60_000, 6_000, 4_999, 4_000])  # checked before each chunk of records

    response = handler({"Records": records}, FakeContext(remaining))

    started = 2 * SQS_CHUNK
    assert response == {
        "batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(started, total)]
    }
    assert CALLS == [("record", f"inbox/file-{i}.csv") for i in range(started)]


def test_s3_trigger_runs_every_record_and_returns_nothing() -> None:
    bind("acme-uploads", "lambda_tests.record", prefix="invoices/")

    assert handler(load_payload("s3_put"), FakeContext()) is None
    assert CALLS == [
        ("record", "invoices/2024/05/INV-1042.pdf"),
        ("record", "invoices/2024/05/INV-1043.pdf"),
    ]
    record = HandlerRun.objects.first().event
    assert record.message_id == FakeContext().aws_request_id


def test_sns_trigger_runs_every_wrapped_s3_event() -> None:
    bind("my-bucket", "lambda_tests.record")

    assert handler(load_payload("lambda_sns"), FakeContext()) is None
    assert sorted(CALLS) == [
        ("record", "myfolder/subfolder/notes.md"),
        ("record", "myfolder/subfolder/test.txt"),
    ]


def test_eventbridge_event_runs_with_the_key_verbatim() -> None:
    bind("acme-media", "lambda_tests.record", prefix="videos/")

    assert handler(load_payload("eventbridge_created"), FakeContext()) is None
    assert CALLS == [("record", "videos/launch+keynote 2024.mp4")]


def test_failing_handler_on_an_asynchronous_trigger_raises_so_lambda_retries() -> None:
    bind("acme-media", "lambda_tests.explode", prefix="videos/")

    with pytest.raises(HandlersFailed, match="cannot handle videos/launch"):
        handler(load_payload("eventbridge_created"), FakeContext())
    run = HandlerRun.objects.get(handler_name="lambda_tests.explode")
    assert run.state == RunState.RETRYING


def test_s3_test_event_is_acknowledged_without_running_anything() -> None:
    bind("acme-uploads", "lambda_tests.record")

    assert handler(load_payload("test_event"), FakeContext()) is None
    assert CALLS == []
    assert not HandlerRun.objects.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"hello": "world"},
        [1, 2],
        json.loads(load_payload("sns_notification")["Message"])["Records"],
    ],
    ids=["unknown-object", "list", "bare-records-list"],
)
def test_unknown_payload_raises_an_error_naming_the_accepted_triggers(payload: Any) -> None:
    with pytest.raises(MalformedMessage) as caught:
        handler(payload, FakeContext())
    message = str(caught.value)
    assert "SQS event source mapping" in message
    assert "S3 Batch Operations" in message
    assert "EventBridge" in message


def test_bare_sns_envelope_is_rejected_with_the_shape_an_sns_trigger_sends() -> None:
    with pytest.raises(MalformedMessage, match="aws:sns"):
        handler(load_payload("sns_notification"), FakeContext())


def test_lambda_dispatch_setting_hands_handlers_to_celery_instead(
    settings, django_capture_on_commit_callbacks
) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "LAMBDA_DISPATCH": "celery"}
    bind("acme-uploads", "lambda_tests.record")
    batch = load_payload("lambda_sqs_mixed")
    batch["Records"] = batch["Records"][:1]

    with django_capture_on_commit_callbacks(execute=True):  # tasks leave after commit
        assert handler(batch, FakeContext()) == {"batchItemFailures": []}

    run = HandlerRun.objects.get()
    assert run.celery_task_id  # sent as a Celery task (run eagerly by the test settings)
    assert run.state == RunState.SUCCEEDED
    assert CALLS == [("record", "inbox/order #981.csv")]


def test_a_negative_time_margin_is_refused_with_an_example() -> None:
    with pytest.raises(S3TasksConfigurationError, match="LAMBDA_TIME_MARGIN_MS.*2000"):
        build_settings({"LAMBDA_TIME_MARGIN_MS": -5})


def test_follow_up_commands_left_in_the_outbox_are_sent_by_the_next_invocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from s3tasks.followups import outbox
    from s3tasks.models import OutboxKind, OutboxMessage

    sent: list[str] = []
    monkeypatch.setattr(outbox, "send_celery", lambda message: sent.append(message.target))
    leftover = OutboxMessage.objects.create(kind=OutboxKind.CELERY, target="demo.summarize")

    handler(load_payload("test_event"), FakeContext())

    assert sent == ["demo.summarize"]
    leftover.refresh_from_db()
    assert leftover.sent_at is not None


def test_no_relay_is_attempted_when_the_invocation_is_out_of_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from s3tasks.followups import outbox

    monkeypatch.setattr(outbox, "relay_outbox", lambda limit: pytest.fail("relay attempted"))
    handler(load_payload("test_event"), FakeContext(iter([0] * 10)))
