"""Poison isolation in the Lambda entrypoint: a bad SQS record fails only itself (it alone
is in `batchItemFailures`), gets a `MessageFailure` row like the worker writes, and the good
records beside it are handled. Run on SQLite and on PostgreSQL (`S3TASKS_DB=postgres`),
whose text columns refuse NUL characters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DatabaseError
from lambda_app.handlers import CALLS
from payload_files import load_payload, payload_text

from s3tasks.exceptions import MalformedMessage
from s3tasks.lambda_handler import UnidentifiedRecords, handler
from s3tasks.models import Bucket, HandlerBinding, MessageFailure, NotificationRule
from s3tasks.processing.message_failures import body_excerpt, storable_text
from s3tasks.rules.routing import router

pytestmark = pytest.mark.django_db

REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
GOOD_KEY = "inbox/order #981.csv"  # the first record of the mixed sample


class FakeContext:
    aws_request_id = REQUEST_ID

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    router.invalidate()
    CALLS.clear()
    yield
    router.invalidate()
    CALLS.clear()


def bind(bucket: str) -> None:
    row, _ = Bucket.objects.get_or_create(name=bucket)
    rule = NotificationRule.objects.create(bucket=row, events=["s3:ObjectCreated:*"])
    HandlerBinding.objects.create(rule=rule, handler_name="lambda_tests.record")


def good_body(key: str = GOOD_KEY) -> dict[str, Any]:
    body = json.loads(load_payload("lambda_sqs_mixed")["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["key"] = key.replace(" ", "+").replace("#", "%23")
    return body


def sqs_record(message_id: str, body: Any) -> dict[str, Any]:
    template = load_payload("lambda_sqs_mixed")["Records"][0]
    text = body if isinstance(body, str) else json.dumps(body)
    return {**template, "messageId": message_id, "body": text}


def poisoned(change) -> dict[str, Any]:
    body = good_body("inbox/poison.csv")
    change(body["Records"][0])
    return body


POISON = {
    "deep-nesting": '{"Records": ' + "[" * 1000 + "]" * 1000 + "}",
    "superscript-size": poisoned(lambda r: r["s3"]["object"].update(size="²")),
    "lone-surrogate-key": poisoned(lambda r: r["s3"]["object"].update(key="a\ud800")),
    "bucket-100-chars": poisoned(lambda r: r["s3"]["bucket"].update(name="b" * 100)),
    "event-name-300": poisoned(lambda r: r.update(eventName="ObjectCreated:" + "x" * 286)),
    "nul-in-key": poisoned(lambda r: r["s3"]["object"].update(key="a%00b")),
    "size-1e20": poisoned(lambda r: r["s3"]["object"].update(size=10**20)),
    "nul-in-body-text": '{"Records": [\x00]}',
}


def test_every_poison_record_is_reported_alone_and_recorded_while_the_good_ones_run() -> None:
    bind("acme-uploads")
    records = [sqs_record("good-1", good_body())]
    records += [sqs_record(name, body) for name, body in POISON.items()]
    records.append(sqs_record("good-2", good_body("inbox/second.csv")))

    response = handler({"Records": records}, FakeContext())

    reported = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    assert reported == list(POISON)
    assert sorted(CALLS) == [("record", "inbox/order #981.csv"), ("record", "inbox/second.csv")]
    rows = {row.message_id: row for row in MessageFailure.objects.all()}
    assert set(rows) == set(POISON)
    assert {row.queue_name for row in rows.values()} == {"s3tasks-events"}
    deep = rows["deep-nesting"].reason  # 3.11: json gives up; 3.13: parsed, shape refused
    assert "nested too deeply" in deep or "expected an object, found a list" in deep
    assert "'²'" in rows["superscript-size"].reason
    assert "\x00" not in rows["nul-in-body-text"].body_excerpt  # escaped, so PostgreSQL stores it
    assert all(len(row.reason) < 1000 for row in rows.values())


def test_a_record_without_a_body_or_with_an_odd_id_fails_only_itself() -> None:
    bind("acme-uploads")
    no_body = sqs_record("no-body", "x")
    del no_body["body"]
    odd_id = sqs_record("odd\x00id", good_body("inbox/odd.csv"))
    batch = {"Records": [no_body, odd_id, sqs_record("good", good_body())]}

    response = handler(batch, FakeContext())

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "no-body"}, {"itemIdentifier": "odd\x00id"}]
    }
    assert CALLS == [("record", GOOD_KEY)]
    assert sorted(MessageFailure.objects.values_list("message_id", flat=True)) == [
        "no-body",
        "odd\\x00id",
    ]
    assert "'body'" in MessageFailure.objects.get(message_id="no-body").reason


def test_a_record_without_a_message_id_fails_the_whole_batch_after_the_others_ran(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bind("acme-uploads")
    anonymous = sqs_record("x", good_body("inbox/anonymous.csv"))
    del anonymous["messageId"]
    batch = {"Records": [sqs_record("good", good_body()), anonymous]}

    with caplog.at_level(logging.ERROR, logger="s3tasks"):
        with pytest.raises(UnidentifiedRecords, match=r"\$\.Records\[1\]"):
            handler(batch, FakeContext())

    assert CALLS == [("record", GOOD_KEY)]  # handled once; the redelivery will skip it
    row = MessageFailure.objects.get()
    assert row.message_id.startswith("(no messageId) ")
    assert "'messageId'" in row.reason
    assert "whole batch is reported failed" in caplog.text

    anonymous["receiptHandle"] = "AQEBredelivered"  # a new receive, a new receipt handle
    with pytest.raises(UnidentifiedRecords):  # redelivered: same row, handler not run again
        handler(batch, FakeContext())
    assert CALLS == [("record", GOOD_KEY)]
    assert MessageFailure.objects.count() == 1


def test_a_failure_to_record_the_row_still_reports_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from s3tasks.models import MessageFailure as Model

    def broken(*args: Any, **kwargs: Any) -> None:
        raise DatabaseError("could not write")

    monkeypatch.setattr(Model.objects, "update_or_create", broken)
    batch = {"Records": [sqs_record("poison", POISON["deep-nesting"])]}

    response = handler(batch, FakeContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": "poison"}]}


def test_a_malformed_asynchronous_trigger_is_recorded_and_raised_for_lambda_to_keep() -> None:
    payload = load_payload("eventbridge_created")
    payload["detail"]["object"]["size"] = 10**20

    with pytest.raises(MalformedMessage, match="50 TB"):
        handler(payload, FakeContext())

    row = MessageFailure.objects.get()
    assert (row.queue_name, row.message_id) == ("lambda", REQUEST_ID)
    assert '"detail-type": "Object Created"' in row.body_excerpt


def test_an_invocation_of_no_known_shape_is_recorded_too() -> None:
    with pytest.raises(MalformedMessage):
        handler(load_payload("rejected/eventbridge_cloudtrail"), FakeContext())

    row = MessageFailure.objects.get()
    assert "CloudTrail" in row.reason and row.message_id == REQUEST_ID


def test_an_eventbridge_event_through_sns_and_sqs_runs_its_handler() -> None:
    bind("acme-media")
    batch = {"Records": [sqs_record("eb", payload_text("eventbridge_via_sns"))]}

    assert handler(batch, FakeContext()) == {"batchItemFailures": []}
    assert CALLS == [("record", "exports/2024 Q2/report+final.csv")]


def test_row_text_is_cut_and_cleaned_for_any_database() -> None:
    assert storable_text("a\x00b\ud800c", 100) == "a\\x00b\\ud800c"
    assert storable_text("x" * 500, 200) == "x" * 200
    assert body_excerpt({"k": "v"}) == '{"k": "v"}'
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert body_excerpt({"deep": deep}).startswith("{'deep'")
    assert len(body_excerpt("y" * 10_000)) == 2000
