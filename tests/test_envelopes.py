"""Envelope parsing: every payload shape becomes the same normalized `S3Event` values.

Pure tests: no database, no AWS (a few override `S3TASKS` through pytest-django's `settings`).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from payload_files import load_payload, payload_names, payload_text

from s3tasks.conf import build_settings
from s3tasks.envelopes import (
    ACCEPTED_SHAPES,
    EVENTBRIDGE_DETAIL_TYPES,
    MessageKind,
    message_kind,
    parse_events,
    parse_message,
    sqs_records,
)
from s3tasks.events import BATCH_OPERATIONS_EVENT_NAME, EventSource, S3Event
from s3tasks.exceptions import MalformedMessage, S3TasksConfigurationError

PUT = "ObjectCreated:Put"
LONG_PREFIX = "archive/café menu "
LONG_KEY = LONG_PREFIX + "z" * (1024 - len(LONG_PREFIX.encode("utf-8")))


@dataclass(frozen=True)
class Expected:
    """What one sample must parse to: its kind and (bucket, key, event name, source) per event."""

    kind: str
    changes: tuple[tuple[str, str, str, str], ...]
    is_test_event: bool = False


def _s3(bucket: str, key: str, name: str = PUT) -> tuple[str, str, str, str]:
    return (bucket, key, name, EventSource.S3)


def _sns(bucket: str, key: str, name: str = PUT) -> tuple[str, str, str, str]:
    return (bucket, key, name, EventSource.SNS)


def _awkward(key: str) -> Expected:
    return Expected(MessageKind.S3_NOTIFICATION, (_s3("acme-awkward", key),))


EXPECTED: dict[str, Expected] = {
    "s3_put": Expected(
        MessageKind.S3_NOTIFICATION,
        (
            _s3("acme-uploads", "invoices/2024/05/INV-1042.pdf"),
            _s3("acme-uploads", "invoices/2024/05/INV-1043.pdf"),
            _s3("acme-uploads", "scans/batch-17.tiff", "ObjectCreated:CompleteMultipartUpload"),
        ),
    ),
    "s3_delete": Expected(
        MessageKind.S3_NOTIFICATION,
        (
            _s3("acme-uploads", "invoices/2024/05/INV-1042.pdf", "ObjectRemoved:Delete"),
            _s3(
                "acme-uploads", "invoices/2024/05/INV-1043.pdf", "ObjectRemoved:DeleteMarkerCreated"
            ),
        ),
    ),
    "s3_moto_no_sequencer": Expected(
        MessageKind.S3_NOTIFICATION, (_s3("incoming", "reports/2024 Q1/summary.pdf"),)
    ),
    "sns_notification": Expected(
        MessageKind.SNS_NOTIFICATION,
        (
            _sns("acme-media", "photos/summer/beach day.jpg"),
            _sns("acme-media", "photos/summer/sunset.jpg"),
        ),
    ),
    "sns_raw": Expected(
        MessageKind.S3_NOTIFICATION,
        (_s3("acme-media", "archive/2023/report-final.docx", "ObjectCreated:Copy"),),
    ),
    "lambda_sns": Expected(
        MessageKind.LAMBDA_SNS,
        (
            _sns("my-bucket", "myfolder/subfolder/test.txt"),
            _sns("my-bucket", "myfolder/subfolder/notes.md"),
        ),
    ),
    "eventbridge_created": Expected(
        MessageKind.EVENTBRIDGE,
        (
            (
                "acme-media",
                "videos/launch+keynote 2024.mp4",
                "ObjectCreated:CompleteMultipartUpload",
                EventSource.EVENTBRIDGE,
            ),
        ),
    ),
    "eventbridge_via_sns": Expected(
        MessageKind.SNS_NOTIFICATION,
        (("acme-media", "exports/2024 Q2/report+final.csv", PUT, EventSource.EVENTBRIDGE),),
    ),
    "eventbridge_async_copy": Expected(
        MessageKind.EVENTBRIDGE,
        (
            (
                "acme-archive",
                "masters/launch keynote 2024.mov",
                "ObjectCreated:Copy",
                EventSource.EVENTBRIDGE,
            ),
        ),
    ),
    "eventbridge_key_special": Expected(
        MessageKind.EVENTBRIDGE,
        (
            (
                "acme-media",
                "reports/2024 Q1/budget+forecast 100%.xlsx",
                PUT,
                EventSource.EVENTBRIDGE,
            ),
        ),
    ),
    "eventbridge_deleted": Expected(
        MessageKind.EVENTBRIDGE,
        (
            (
                "acme-media",
                "videos/old-teaser.mp4",
                "ObjectRemoved:DeleteMarkerCreated",
                EventSource.EVENTBRIDGE,
            ),
        ),
    ),
    "test_event": Expected(MessageKind.TEST_EVENT, (), is_test_event=True),
    "sns_test_event": Expected(MessageKind.SNS_NOTIFICATION, (), is_test_event=True),
    "batch_1_0": Expected(
        MessageKind.BATCH_OPERATIONS,
        (
            (
                "acme-archive",
                "customerImages/customer image 1(1).jpg",
                BATCH_OPERATIONS_EVENT_NAME,
                EventSource.BATCH_OPERATIONS,
            ),
        ),
    ),
    "batch_2_0": Expected(
        MessageKind.BATCH_OPERATIONS,
        (
            (
                "acme-media",
                "photos/2024/IMG_0001+HDR.HEIC",
                BATCH_OPERATIONS_EVENT_NAME,
                EventSource.BATCH_OPERATIONS,
            ),
        ),
    ),
    "lambda_sqs_mixed": Expected(
        MessageKind.LAMBDA_SQS,
        (
            _s3("acme-uploads", "inbox/order #981.csv"),
            _sns("acme-media", "photos/summer/sunset.jpg"),
            ("acme-media", "exports/daily.parquet", PUT, EventSource.EVENTBRIDGE),
        ),
    ),
    "key_spaces": _awkward("red flower.jpg"),
    "key_literal_plus": _awkward("a+b.txt"),
    "key_unicode": _awkward("café/日本.txt"),
    "key_literal_percent": _awkward("100%.txt"),
    "key_slashes": _awkward("a/b//c/d/"),
    "key_1024_bytes": _awkward(LONG_KEY),
}
SAMPLES = sorted(EXPECTED)
SAMPLES_WITH_EVENTS = [name for name in SAMPLES if EXPECTED[name].changes]


def changes(events: list[S3Event] | tuple[S3Event, ...]) -> tuple[tuple[str, str, str, str], ...]:
    return tuple((e.bucket, e.key, e.event_name, e.source) for e in events)


def raises_malformed(payload: Any, *fragments: str) -> str:
    """Parse, expect `MalformedMessage`, and check its text names every fragment."""
    with pytest.raises(MalformedMessage) as caught:
        parse_events(payload)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- the shared suite: every sample, the same normalized fields -----------------------------


def test_every_payload_sample_is_covered_by_the_shared_suite() -> None:
    assert payload_names() == SAMPLES


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_parses_to_its_expected_changes(name: str) -> None:
    parsed = parse_message(load_payload(name))

    assert parsed.kind == EXPECTED[name].kind
    assert parsed.is_test_event is EXPECTED[name].is_test_event
    assert changes(parsed.events) == EXPECTED[name].changes
    assert message_kind(load_payload(name)) == EXPECTED[name].kind


@pytest.mark.parametrize("name", SAMPLES)
def test_dict_text_and_bytes_payloads_parse_alike(name: str) -> None:
    text = payload_text(name)

    from_dict = parse_events(load_payload(name))

    assert parse_events(text) == from_dict
    assert parse_events(text.encode("utf-8")) == from_dict


@pytest.mark.parametrize("name", SAMPLES_WITH_EVENTS)
def test_normalized_fields_have_one_form_whatever_the_envelope(name: str) -> None:
    for event in parse_events(load_payload(name)):
        assert not event.event_name.startswith("s3:")
        assert event.bucket and event.key
        assert isinstance(event.raw, dict) and event.raw
        if event.source == EventSource.BATCH_OPERATIONS:
            assert event.event_time is None and event.batch is not None
        else:
            assert event.event_time is not None
            assert event.event_time.utcoffset() is not None
            assert event.event_time.tzinfo == UTC
            assert event.region
            assert event.batch is None
        assert event.size is None or (isinstance(event.size, int) and event.size >= 0)


@pytest.mark.parametrize("name", SAMPLES_WITH_EVENTS)
def test_redelivered_message_has_equal_dedup_keys_and_distinct_events_differ(name: str) -> None:
    first = parse_events(payload_text(name))
    redelivered = parse_events(payload_text(name))

    assert [e.dedup_key for e in first] == [e.dedup_key for e in redelivered]
    assert len({e.dedup_key for e in first}) == len(first)


@pytest.mark.parametrize("name", SAMPLES_WITH_EVENTS)
def test_to_dict_from_dict_roundtrip_keeps_the_decoded_key(name: str) -> None:
    for event in parse_events(load_payload(name)):
        carried = json.loads(json.dumps(event.to_dict()))  # what Celery carries

        restored = S3Event.from_dict(carried)

        assert restored == event
        assert restored.key == event.key
        assert restored.raw == event.raw
        assert restored.dedup_key == event.dedup_key


# --- records and keys --------------------------------------------------------------------------


def test_every_record_of_a_multi_record_notification_becomes_an_event() -> None:
    events = parse_events(load_payload("s3_put"))

    assert [e.key.rsplit("/", 1)[-1] for e in events] == [
        "INV-1042.pdf",
        "INV-1043.pdf",
        "batch-17.tiff",
    ]
    assert [e.sequencer for e in events] == [
        "0066320F2F5B8E21C4",
        "0066320F2F9A41D7E0",
        "0066320F30013B9A52",
    ]
    assert events[0].raw is not events[1].raw
    assert events[2].size == 73400320
    assert events[2].etag == "e0f1d1c7d3c2b4fb5cd2b3f8b1f0e9a1-14"
    assert events[0].version_id == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert events[0].region == "us-west-2"


def test_key_with_plus_is_decoded_to_space_exactly_once() -> None:
    (event,) = parse_events(load_payload("key_spaces"))

    assert event.key == "red flower.jpg"
    assert event.raw["s3"]["object"]["key"] == "red+flower.jpg"  # raw stays as delivered


def test_encoded_plus_becomes_a_literal_plus_and_is_never_decoded_again() -> None:
    (event,) = parse_events(load_payload("key_literal_plus"))

    assert event.key == "a+b.txt"
    assert S3Event.from_dict(event.to_dict()).key == "a+b.txt"


def test_key_is_decoded_once_through_sqs_and_sns_layers() -> None:
    notification = load_payload("key_literal_percent")
    notification["Records"][0]["s3"]["object"]["key"] = "100%2525+a%2Bb.txt"
    sns = load_payload("sns_notification")
    sns["Message"] = json.dumps(notification)
    lambda_event = load_payload("lambda_sqs_mixed")
    lambda_event["Records"] = [{**lambda_event["Records"][0], "body": json.dumps(sns)}]

    (event,) = parse_events(lambda_event)

    assert event.key == "100%25 a+b.txt"
    assert event.source == EventSource.SNS


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("key_unicode", "café/日本.txt"),
        ("key_literal_percent", "100%.txt"),
        ("key_slashes", "a/b//c/d/"),
        ("s3_moto_no_sequencer", "reports/2024 Q1/summary.pdf"),
    ],
)
def test_awkward_keys_decode_to_the_real_object_key(name: str, key: str) -> None:
    (event,) = parse_events(load_payload(name))

    assert event.key == key


def test_a_1024_byte_key_survives_decoding_intact() -> None:
    (event,) = parse_events(load_payload("key_1024_bytes"))

    assert len(event.key.encode("utf-8")) == 1024
    assert event.key == LONG_KEY


def test_moto_record_without_sequencer_parses_and_dedupes_on_etag_and_time() -> None:
    (event,) = parse_events(load_payload("s3_moto_no_sequencer"))
    later = load_payload("s3_moto_no_sequencer")
    later["Records"][0]["eventTime"] = "2024-05-01T12:00:01.456Z"

    (overwrite,) = parse_events(later)

    assert event.sequencer == ""
    assert event.dedup_key != overwrite.dedup_key


def test_same_change_delivered_directly_and_through_sns_has_one_dedup_key() -> None:
    direct = load_payload("key_spaces")
    wrapped = load_payload("sns_notification")
    wrapped["Message"] = json.dumps(direct)

    (from_queue,) = parse_events(direct)
    (from_topic,) = parse_events(wrapped)

    assert (from_queue.source, from_topic.source) == (EventSource.S3, EventSource.SNS)
    assert from_queue.dedup_key == from_topic.dedup_key


def test_s3_prefix_of_an_event_name_is_stripped() -> None:
    payload = load_payload("key_spaces")
    payload["Records"][0]["eventName"] = "s3:ObjectCreated:Post"

    (event,) = parse_events(payload)

    assert event.event_name == "ObjectCreated:Post"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2019-02-10T07:49:35.265Z", datetime(2019, 2, 10, 7, 49, 35, 265000, tzinfo=UTC)),
        ("2021-11-12T00:00:00Z", datetime(2021, 11, 12, tzinfo=UTC)),
        ("2021-11-12T00:00:00", datetime(2021, 11, 12, tzinfo=UTC)),
        ("2021-11-12T02:00:00+02:00", datetime(2021, 11, 12, tzinfo=UTC)),
    ],
)
def test_event_times_become_aware_utc_datetimes(written: str, expected: datetime) -> None:
    payload = load_payload("key_spaces")
    payload["Records"][0]["eventTime"] = written

    (event,) = parse_events(payload)

    assert event.event_time == expected
    assert event.event_time.tzinfo == UTC


# --- test events -----------------------------------------------------------------------------


def test_bare_test_event_is_recognised_and_yields_no_events() -> None:
    parsed = parse_message(payload_text("test_event"))

    assert parsed.is_test_event
    assert parsed.events == ()


def test_sns_wrapped_test_event_is_recognised_and_yields_no_events() -> None:
    parsed = parse_message(load_payload("sns_test_event"))

    assert parsed.is_test_event
    assert parsed.kind == MessageKind.SNS_NOTIFICATION
    assert parse_events(load_payload("sns_test_event")) == []


def test_lambda_sqs_event_is_a_test_only_when_every_body_is_a_test_event() -> None:
    mixed = load_payload("lambda_sqs_mixed")
    only_tests = copy.deepcopy(mixed)
    only_tests["Records"] = [mixed["Records"][2], mixed["Records"][2]]

    assert not parse_message(mixed).is_test_event
    assert parse_message(only_tests).is_test_event
    assert parse_message(only_tests).events == ()


# --- Lambda SQS events: per-message processing -------------------------------------------------


def test_sqs_records_gives_each_message_id_and_raw_body_in_order() -> None:
    event = load_payload("lambda_sqs_mixed")

    records = sqs_records(event)

    assert [r.message_id for r in records] == [r["messageId"] for r in event["Records"]]
    assert [r.body for r in records] == [r["body"] for r in event["Records"]]
    assert records[0].receipt_handle.startswith("AQEB")
    assert records[0].attributes["ApproximateReceiveCount"] == "1"
    assert [len(parse_events(r.body)) for r in records] == [1, 1, 0, 1]


def test_one_bad_body_fails_the_whole_parse_but_not_its_neighbours_one_by_one() -> None:
    event = load_payload("lambda_sqs_mixed")
    event["Records"][1]["body"] = "not json at all"

    raises_malformed(event, "$.Records[1].body", "not JSON")
    outcomes = []
    for record in sqs_records(event):
        try:
            outcomes.append(len(parse_events(record.body)))
        except MalformedMessage:
            outcomes.append(record.message_id)

    assert outcomes == [1, event["Records"][1]["messageId"], 0, 1]


def test_sqs_records_refuses_a_payload_that_is_not_a_lambda_sqs_event() -> None:
    with pytest.raises(MalformedMessage, match="expected a Lambda SQS event, found an S3 notif"):
        sqs_records(load_payload("s3_put"))


def test_sqs_record_without_message_id_is_kept_with_its_problem_named() -> None:
    event = load_payload("lambda_sqs_mixed")
    del event["Records"][3]["messageId"]

    records = sqs_records(event)

    assert [r.message_id == "" for r in records] == [False, False, False, True]
    assert re.search(r"\$\.Records\[3\]: missing .*'messageId'", records[3].problem)
    assert not any(r.problem for r in records[:3])
    raises_malformed(event, "$.Records[3]", "'messageId'")  # parsing the whole event still fails


def test_sqs_record_without_a_body_fails_alone_and_keeps_its_id() -> None:
    event = load_payload("lambda_sqs_mixed")
    del event["Records"][1]["body"]
    event["Records"][2]["body"] = {"not": "a string"}

    records = sqs_records(event)

    assert [bool(r.problem) for r in records] == [False, True, True, False]
    assert records[1].message_id == event["Records"][1]["messageId"]
    assert "'body'" in records[1].problem and "expected a string" in records[2].problem


def test_sqs_record_receive_count_and_queue_name_are_read_safely() -> None:
    event = load_payload("lambda_sqs_mixed")
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "3"
    event["Records"][1]["attributes"]["ApproximateReceiveCount"] = "²"
    event["Records"][2]["attributes"]["ApproximateReceiveCount"] = "9" * 400
    event["Records"][3]["eventSourceARN"] = "arn:aws:sqs:us-west-2:111122223333:bad\x00name"

    records = sqs_records(event)

    assert [r.receive_count for r in records] == [3, 1, 1, 1]
    assert [r.queue_name for r in records] == ["s3tasks-events"] * 3 + [""]


def test_lambda_only_shapes_cannot_hide_inside_a_queue_body() -> None:
    event = load_payload("lambda_sqs_mixed")
    event["Records"][0]["body"] = payload_text("batch_1_0")

    raises_malformed(event, "$.Records[0].body", "Batch Operations", "cannot be nested here")


# --- malformed input -----------------------------------------------------------------------


def test_malformed_record_raises_and_returns_nothing() -> None:
    payload = load_payload("s3_put")
    records = payload["Records"]
    payload["Records"] = [records[0], records[1], copy.deepcopy(records[1]), records[2], records[0]]
    del payload["Records"][3]["s3"]["object"]["key"]

    raises_malformed(payload, "$.Records[3].s3.object", "'key'")


def test_missing_event_name_names_the_record() -> None:
    payload = load_payload("s3_delete")
    del payload["Records"][1]["eventName"]

    raises_malformed(payload, "$.Records[1]", "'eventName'")


def test_record_from_another_service_is_named() -> None:
    payload = load_payload("s3_put")
    payload["Records"][2]["eventSource"] = "aws:kinesis"

    raises_malformed(payload, "$.Records[2]", "'aws:kinesis'", "aws:s3", "aws:sqs")


def test_records_from_mixed_sources_are_refused() -> None:
    payload = load_payload("s3_put")
    payload["Records"].append(load_payload("lambda_sqs_mixed")["Records"][0])

    raises_malformed(payload, "$.Records[3]", "mixes aws:sqs")


def test_text_that_is_not_json_says_not_json() -> None:
    raises_malformed("{'Records': nope", "not JSON")
    raises_malformed(b"\xff\xfe\x00garbage", "not JSON")


def test_json_that_is_not_an_object_is_refused() -> None:
    raises_malformed("[1, 2]", "expected a JSON object, found a list")


def test_unknown_shape_lists_the_accepted_shapes_and_the_keys_found() -> None:
    message = raises_malformed({"hello": 1, "Detail": {}}, "'Detail'", "'hello'")

    for shape in ACCEPTED_SHAPES:
        assert shape in message


def test_wrong_field_types_are_named() -> None:
    payload = load_payload("key_spaces")
    payload["Records"][0]["s3"]["object"]["size"] = "big"
    raises_malformed(payload, "$.Records[0].s3.object.size", "'big'")

    payload = load_payload("key_spaces")
    payload["Records"][0]["s3"]["bucket"]["name"] = ["acme"]
    raises_malformed(payload, "$.Records[0].s3.bucket.name", "expected a string, found a list")

    payload = load_payload("key_spaces")
    payload["Records"][0]["eventTime"] = "yesterday"
    raises_malformed(payload, "$.Records[0].eventTime", "not an ISO-8601 time")


def test_payload_of_another_type_or_with_odd_event_source_is_refused() -> None:
    raises_malformed(["Records"], "expected a dict or JSON text/bytes, found a list")
    payload = load_payload("s3_put")
    payload["Records"][0]["eventSource"] = ["aws:s3"]
    raises_malformed(payload, "$.Records[0].eventSource is ['aws:s3']")


def test_empty_records_list_is_refused() -> None:
    raises_malformed({"Records": []}, "non-empty list")


def test_sns_message_that_is_not_json_is_named() -> None:
    payload = load_payload("sns_notification")
    payload["Message"] = "Hello from SNS"

    raises_malformed(payload, "$.Message", "not JSON")


def test_sns_subscription_confirmation_is_refused_with_a_hint() -> None:
    payload = load_payload("sns_notification")
    payload["Type"] = "SubscriptionConfirmation"

    raises_malformed(payload, "'SubscriptionConfirmation'", "SubscribeURL")


# --- EventBridge ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detail_type", "reason", "deletion_type", "event_name"),
    [
        ("Object Created", "PutObject", None, "ObjectCreated:Put"),
        ("Object Created", "POST Object", None, "ObjectCreated:Post"),
        ("Object Created", "CopyObject", None, "ObjectCreated:Copy"),
        (
            "Object Created",
            "CompleteMultipartUpload",
            None,
            "ObjectCreated:CompleteMultipartUpload",
        ),
        ("Object Deleted", "DeleteObject", "Permanently Deleted", "ObjectRemoved:Delete"),
        (
            "Object Deleted",
            "DeleteObject",
            "Delete Marker Created",
            "ObjectRemoved:DeleteMarkerCreated",
        ),
        (
            "Object Deleted",
            "Lifecycle Expiration",
            "Permanently Deleted",
            "LifecycleExpiration:Delete",
        ),
        (
            "Object Deleted",
            "Lifecycle Expiration",
            "Delete Marker Created",
            "LifecycleExpiration:DeleteMarkerCreated",
        ),
        ("Object Restore Initiated", None, None, "ObjectRestore:Post"),
        ("Object Restore Completed", None, None, "ObjectRestore:Completed"),
        ("Object Restore Expired", None, None, "ObjectRestore:Delete"),
        ("Object Storage Class Changed", None, None, "LifecycleTransition"),
        ("Object Access Tier Changed", None, None, "IntelligentTiering"),
        ("Object Tags Added", None, None, "ObjectTagging:Put"),
        ("Object Tags Deleted", None, None, "ObjectTagging:Delete"),
        ("Object ACL Updated", None, None, "ObjectAcl:Put"),
    ],
)
def test_eventbridge_detail_types_map_to_s3_event_names(
    detail_type: str, reason: str | None, deletion_type: str | None, event_name: str
) -> None:
    payload = load_payload("eventbridge_created")
    payload["detail-type"] = detail_type
    payload["detail"].pop("reason")
    if reason is not None:
        payload["detail"]["reason"] = reason
    if deletion_type is not None:
        payload["detail"]["deletion-type"] = deletion_type

    (event,) = parse_events(payload)

    assert event.event_name == event_name
    assert event.source == EventSource.EVENTBRIDGE


def test_eventbridge_fields_are_normalized() -> None:
    (event,) = parse_events(load_payload("eventbridge_created"))

    assert event.size == 198524144
    assert event.etag == "4af981f98d22a0b9979da24b259e5e42-12"
    assert event.version_id == "uhggCJ2_B6gU2JaXWXebnXFDstO0ID6G"
    assert event.sequencer == "0064D3901D00059242"
    assert event.region == "us-west-2"
    assert event.event_time == datetime(2024, 5, 1, 9, 20, 41, tzinfo=UTC)
    assert event.raw["id"] == "17793124-05d4-b198-2fde-7ededc63b103"


def test_eventbridge_keys_are_taken_verbatim_not_url_decoded_by_default() -> None:
    payload = load_payload("eventbridge_deleted")
    payload["detail"]["object"]["key"] = "notes/a+b 100%25.txt"

    (event,) = parse_events(payload)

    assert event.key == "notes/a+b 100%25.txt"


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("verbatim", "reports/2024 Q1/budget+forecast 100%.xlsx"),
        ("url-encoded", "reports/2024 Q1/budget forecast 100%.xlsx"),  # "+" read as a space
    ],
)
def test_eventbridge_keys_setting_chooses_how_keys_are_read(
    settings, setting: str, key: str
) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "EVENTBRIDGE_KEYS": setting}

    (event,) = parse_events(load_payload("eventbridge_key_special"))

    assert event.key == key
    assert event.raw["detail"]["object"]["key"] == "reports/2024 Q1/budget+forecast 100%.xlsx"


def test_url_encoded_eventbridge_keys_are_decoded_once_like_notification_keys(settings) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "EVENTBRIDGE_KEYS": "url-encoded"}
    payload = load_payload("eventbridge_created")
    payload["detail"]["object"]["key"] = "caf%C3%A9/a%2Bb+c%2525.txt"
    notification = load_payload("key_spaces")
    notification["Records"][0]["s3"]["object"]["key"] = "caf%C3%A9/a%2Bb+c%2525.txt"

    (from_eventbridge,) = parse_events(payload)
    (from_notification,) = parse_events(notification)

    assert from_eventbridge.key == from_notification.key == "café/a+b c%25.txt"


def test_url_encoded_eventbridge_key_that_is_not_utf8_is_malformed(settings) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "EVENTBRIDGE_KEYS": "url-encoded"}
    payload = load_payload("eventbridge_created")
    payload["detail"]["object"]["key"] = "bad/%FF.txt"

    raises_malformed(payload, "$.detail.object.key", "does not decode to UTF-8")


def test_an_unknown_eventbridge_keys_setting_is_refused_with_the_choices() -> None:
    with pytest.raises(S3TasksConfigurationError, match="EVENTBRIDGE_KEYS.*'verbatim'"):
        build_settings({"EVENTBRIDGE_KEYS": "decoded"})


def test_eventbridge_event_published_to_sns_keeps_its_eventbridge_source() -> None:
    parsed = parse_message(load_payload("eventbridge_via_sns"))
    (event,) = parsed.events

    assert parsed.kind == MessageKind.SNS_NOTIFICATION
    assert event.source == EventSource.EVENTBRIDGE
    assert event.raw["detail-type"] == "Object Created"  # raw is the EventBridge event
    assert event.event_time == datetime(2024, 5, 1, 11, 2, 17, tzinfo=UTC)


def test_eventbridge_through_sns_through_a_lambda_sqs_event_is_parsed() -> None:
    event = load_payload("lambda_sqs_mixed")
    event["Records"] = [{**event["Records"][0], "body": payload_text("eventbridge_via_sns")}]

    (parsed,) = parse_events(event)

    assert (parsed.bucket, parsed.source) == ("acme-media", EventSource.EVENTBRIDGE)


def test_async_copy_completion_is_the_finished_copy_of_an_object() -> None:
    (event,) = parse_events(load_payload("eventbridge_async_copy"))

    assert event.event_name == "ObjectCreated:Copy"
    assert event.size == 73014444032
    assert event.version_id == "Xs5ZrJ3yqB9vL0m8k7e2d1c4a6f8h0j2"


def test_cloudtrail_api_call_event_says_what_to_configure_instead() -> None:
    payload = load_payload("rejected/eventbridge_cloudtrail")

    message = raises_malformed(
        payload, "CloudTrail", "'PutObject'", "'Object Created'", "eventbridge_enabled"
    )

    assert len(message) < 1000


def test_moto_eventbridge_spellings_epoch_time_and_etag_are_accepted() -> None:
    payload = load_payload("eventbridge_created")
    payload["time"] = 1714555241.0
    payload["detail"]["object"]["eTag"] = payload["detail"]["object"].pop("etag")

    (event,) = parse_events(payload)

    assert event.event_time == datetime(2024, 5, 1, 9, 20, 41, tzinfo=UTC)
    assert event.etag == "4af981f98d22a0b9979da24b259e5e42-12"


def test_unknown_eventbridge_detail_type_names_the_accepted_ones() -> None:
    payload = load_payload("eventbridge_created")
    payload["detail-type"] = "Object Replicated"

    message = raises_malformed(payload, "'Object Replicated'")

    for detail_type in EVENTBRIDGE_DETAIL_TYPES:
        assert repr(detail_type) in message


def test_eventbridge_delete_without_deletion_type_is_refused() -> None:
    payload = load_payload("eventbridge_deleted")
    del payload["detail"]["deletion-type"]

    raises_malformed(payload, "$.detail.deletion-type", "'Permanently Deleted'")


def test_eventbridge_created_with_unknown_reason_is_refused() -> None:
    payload = load_payload("eventbridge_created")
    payload["detail"]["reason"] = "RenameObject"

    raises_malformed(payload, "$.detail.reason", "'RenameObject'", "'PutObject'")


# --- S3 Batch Operations -------------------------------------------------------------------


def test_batch_operations_1_0_task_becomes_an_event_with_its_batch_context() -> None:
    (event,) = parse_events(load_payload("batch_1_0"))

    assert (event.bucket, event.key) == ("acme-archive", "customerImages/customer image 1(1).jpg")
    assert event.version_id == "1"
    assert event.event_name == BATCH_OPERATIONS_EVENT_NAME
    assert event.batch is not None
    assert event.batch.schema_version == "1.0"
    assert event.batch.invocation_id == "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo"
    assert event.batch.task_id == "dGFza2lkZ29lc2hlcmUK"
    assert event.batch.job_id == "f3cc4f60-61f6-4a2b-8a21-d07600c373ce"
    assert event.batch.user_arguments == {}


def test_batch_operations_2_0_task_carries_user_arguments_and_bucket_name() -> None:
    (event,) = parse_events(load_payload("batch_2_0"))

    assert (event.bucket, event.key) == ("acme-media", "photos/2024/IMG_0001+HDR.HEIC")
    assert event.version_id == ""  # s3VersionId is null for an unversioned object
    assert event.batch is not None
    assert event.batch.schema_version == "2.0"
    assert event.batch.job_id == "ry77cd60-61f6-4a2b-8a21-d07600c874gf"
    assert event.batch.user_arguments == {
        "MyDestinationBucket": "acme-thumbnails",
        "MyDestinationBucketRegion": "us-west-2",
        "MyDestinationPrefix": "thumbs/",
    }


def test_batch_bucket_arn_with_region_and_account_still_names_the_bucket() -> None:
    payload = load_payload("batch_1_0")
    payload["tasks"][0]["s3BucketArn"] = "arn:aws:s3:us-east-1:0123456788:awsexamplebucket1"

    (event,) = parse_events(payload)

    assert event.bucket == "awsexamplebucket1"


def test_batch_tasks_of_one_invocation_have_distinct_dedup_keys() -> None:
    payload = load_payload("batch_2_0")
    payload["tasks"].append({**payload["tasks"][0], "taskId": "c2Vjb25kIHRhc2sK"})

    first, second = parse_events(payload)

    assert first.dedup_key != second.dedup_key


def test_batch_unknown_schema_version_and_missing_bucket_are_named() -> None:
    payload = load_payload("batch_1_0")
    payload["invocationSchemaVersion"] = "3.0"
    raises_malformed(payload, "'3.0'", "'1.0'", "'2.0'")

    payload = load_payload("batch_1_0")
    payload["tasks"].append({"taskId": "dGFzazIK", "s3Key": "b.jpg", "s3VersionId": None})
    raises_malformed(payload, "$.tasks[1]", "'s3BucketArn'")

    payload = load_payload("batch_2_0")
    payload["tasks"][0]["s3Bucket"] = None
    raises_malformed(payload, "$.tasks[0]", "'s3Bucket'")
