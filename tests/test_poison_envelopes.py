"""Poison payloads: whatever arrives, envelope parsing raises only `MalformedMessage`, quotes
at most ~200 characters of what it refused, and lets through nothing the database would
reject (values beyond S3's limits or the `EventRecord` columns, NUL, lone surrogates).

Pure tests: no database, no AWS. The property-based version is tests/test_poison_fuzz.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from payload_files import load_payload, payload_text

from s3tasks.envelopes import message_kind, parse_events, sqs_records
from s3tasks.envelopes.limits import (
    KEY_MAX_BYTES,
    MAX_DEPTH,
    MAX_OBJECT_SIZE,
    TEXT_COLUMNS,
    checked_event,
)
from s3tasks.events import S3Event
from s3tasks.exceptions import MalformedMessage
from s3tasks.models import EventRecord

Mutation = Callable[[dict[str, Any]], None]


def malformed(payload: Any, *fragments: str) -> str:
    """Parse, expect `MalformedMessage` (nothing else), and check its text names each fragment."""
    with pytest.raises(MalformedMessage) as caught:
        parse_events(payload)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def record(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["Records"][0]


def obj(payload: dict[str, Any]) -> dict[str, Any]:
    return record(payload)["s3"]["object"]


def with_change(change: Mutation, sample: str = "key_spaces") -> dict[str, Any]:
    payload = load_payload(sample)
    change(payload)
    return payload


def nested(depth: int) -> Any:
    """A value `2 * depth` levels deep (an object holding a list, `depth` times)."""
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": [value]}
    return value


# --- what the issue found, one by one ------------------------------------------------------


def test_json_nested_a_thousand_levels_deep_is_malformed_not_a_recursion_error() -> None:
    body = '{"Records": ' + "[" * 1000 + "]" * 1000 + "}"

    assert len(body) < 2100
    # Python 3.11's json gives up (RecursionError); 3.13's parses it and the shape is refused
    message = malformed(body)
    assert "nested too deeply" in message or "expected an object, found a list" in message
    with pytest.raises(MalformedMessage):
        message_kind(body)


def test_a_superscript_digit_size_is_malformed_not_a_value_error() -> None:
    malformed(with_change(lambda p: obj(p).update(size="²")), ".s3.object.size", "'²'")


def test_a_key_with_a_lone_surrogate_is_malformed_before_dedup_key_ever_sees_it() -> None:
    malformed(with_change(lambda p: obj(p).update(key="a\ud800b")), "lone surrogate")
    malformed(with_change(lambda p: obj(p).update(key="a%ED%A0%80b")), "does not decode")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda p: record(p)["s3"]["bucket"].update(name="b" * 100), "bucket name"),
        (lambda p: record(p).update(eventName="ObjectCreated:" + "x" * 286), "event name"),
        (lambda p: obj(p).update(key="a\x00b"), "NUL"),
        (lambda p: obj(p).update(key="a%00b"), "NUL"),  # decoded from the URL form
        (lambda p: obj(p).update(size=10**20), "50 TB"),
    ],
    ids=["bucket-100-chars", "event-name-300-chars", "nul-in-key", "encoded-nul", "size-1e20"],
)
def test_values_the_database_would_reject_are_malformed(change: Mutation, fragment: str) -> None:
    malformed(with_change(change), "$.Records[0]", fragment)


def test_a_300_kb_field_is_quoted_in_at_most_about_200_characters() -> None:
    huge = "9" * 150_000 + "x" * 150_000
    for change in (
        lambda p: obj(p).update(size=huge),
        lambda p: record(p).update(eventTime=huge),
        lambda p: record(p).update(eventSource=huge),
        lambda p: record(p).update(eventName=huge),
        lambda p: obj(p).update(key=huge),
    ):
        message = malformed(with_change(change))
        assert len(message) < 700, message[:300]
        assert "300,000 characters" in message or len(message) < 400


def test_an_unknown_shape_with_huge_keys_lists_them_briefly() -> None:
    message = malformed({("k" * 100_000) + str(i): i for i in range(50)})

    assert len(message) < 2000


# --- S3's limits and the columns, at their edges ------------------------------------------


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "Legacy_Bucket"])
def test_every_bucket_name_s3_allows_is_accepted(name: str) -> None:
    (event,) = parse_events(with_change(lambda p: record(p)["s3"]["bucket"].update(name=name)))

    assert event.bucket == name


@pytest.mark.parametrize("name", ["ab", "a" * 64, "bad bucket", "tab\tbucket", "bücket"])
def test_bucket_names_s3_cannot_have_are_malformed(name: str) -> None:
    malformed(with_change(lambda p: record(p)["s3"]["bucket"].update(name=name)), "bucket name")


def test_a_key_of_1025_utf8_bytes_is_malformed_and_1024_is_not() -> None:
    accepted = "é" * (KEY_MAX_BYTES // 2)
    (event,) = parse_events(with_change(lambda p: obj(p).update(key=accepted)))
    assert len(event.key.encode("utf-8")) == KEY_MAX_BYTES

    malformed(with_change(lambda p: obj(p).update(key=accepted + "x")), "1,025 bytes")


def test_sizes_up_to_s3s_50_tb_limit_are_accepted_and_larger_ones_are_not() -> None:
    for size in (0, 5 * 2**40 + 1, MAX_OBJECT_SIZE, str(MAX_OBJECT_SIZE)):
        (event,) = parse_events(with_change(lambda p, size=size: obj(p).update(size=size)))
        assert event.size == int(size)

    malformed(with_change(lambda p: obj(p).update(size=MAX_OBJECT_SIZE + 1)), "50 TB")
    malformed(with_change(lambda p: obj(p).update(size="1" * 21)), "size")
    malformed(with_change(lambda p: obj(p).update(size=-1)), "size")


def test_an_event_name_of_100_characters_is_accepted_and_101_is_not() -> None:
    name = "ObjectCreated:" + "P" * 86
    (event,) = parse_events(with_change(lambda p: record(p).update(eventName=name)))
    assert event.event_name == name

    malformed(with_change(lambda p: record(p).update(eventName=name + "x")), "event name")
    malformed(with_change(lambda p: record(p).update(eventName="Object Created")), "event name")


@pytest.mark.parametrize(("field", "column"), sorted(TEXT_COLUMNS.items()))
def test_text_fields_longer_than_their_column_are_malformed(field: str, column: int) -> None:
    names = {"etag": "eTag", "version_id": "versionId", "sequencer": "sequencer"}
    if field == "region":
        payload = with_change(lambda p: record(p).update(awsRegion="r" * (column + 1)))
    else:
        payload = with_change(lambda p: obj(p).update({names[field]: "v" * (column + 1)}))

    malformed(payload, field, f"longer than {column}")


def test_the_limits_are_the_eventrecord_columns() -> None:
    """If a column of EventRecord changes, the envelope limits must change with it."""
    fields = {f.name: f for f in EventRecord._meta.get_fields()}

    assert fields["bucket"].max_length == 63
    assert fields["event_name"].max_length == 100
    for name, limit in TEXT_COLUMNS.items():
        assert fields[name].max_length == limit, name


# --- whatever else is in the record must be storable too ----------------------------------


@pytest.mark.parametrize(
    "body",
    [
        payload_text("key_spaces").replace('"size": 90210', '"size": NaN'),
        payload_text("key_spaces").replace('"size": 90210', '"size": Infinity'),
        payload_text("key_spaces").replace("A3NL1KOZZKEXAMPLE", "A3NL\\u0000EXAMPLE"),
        payload_text("key_spaces").replace("A3NL1KOZZKEXAMPLE", "A3NL\\udc00EXAMPLE"),
        b'{"Records": [{"eventSource": "aws:s3", "x": "\xff\xfe"}]}',
    ],
    ids=["nan", "infinity", "nul-elsewhere", "surrogate-elsewhere", "invalid-utf8"],
)
def test_text_postgresql_could_not_store_anywhere_in_the_record_is_malformed(body: Any) -> None:
    malformed(body)


def test_a_record_nested_deeper_than_the_limit_is_malformed_without_recursion() -> None:
    shallow = with_change(lambda p: record(p).update(extra=nested(MAX_DEPTH // 2 - 2)))
    assert parse_events(shallow)

    malformed(with_change(lambda p: record(p).update(extra=nested(50))), "nested deeper")
    # A decoded payload (a Lambda event) can nest far beyond what json.loads would accept.
    malformed(with_change(lambda p: record(p).update(extra=nested(100_000))), "nested too deep")


def test_values_that_are_not_json_in_a_decoded_payload_are_malformed() -> None:
    malformed(with_change(lambda p: record(p).update(extra={1, 2})), "not storable as JSON")
    malformed(with_change(lambda p: record(p).update(extra={(3,): "x"})), "not storable")
    malformed(with_change(lambda p: record(p).update(extra=10**5000)), "not storable as JSON")
    malformed(with_change(lambda p: record(p).update(extra=float("nan"))), "not storable")


def test_a_literal_backslash_u0000_in_text_is_no_nul_character() -> None:
    (event,) = parse_events(with_change(lambda p: record(p).update(note="C:\\u0000\\x")))

    assert event.raw["note"] == "C:\\u0000\\x"
    malformed(with_change(lambda p: record(p).update(note="C:\\\x00")), "NUL")  # a NUL does


def test_batch_operations_ids_and_user_arguments_must_be_storable() -> None:
    payload = load_payload("batch_2_0")
    payload["job"]["userArguments"]["note"] = "a\x00b"
    malformed(payload, "userArguments", "NUL")

    payload = load_payload("batch_2_0")
    payload["tasks"][0]["taskId"] = "t\ud800"
    malformed(payload, "$.tasks[0]", "lone surrogate")


def test_eventbridge_and_sns_envelopes_are_checked_the_same_way() -> None:
    payload = load_payload("eventbridge_created")
    payload["detail"]["bucket"]["name"] = "x" * 64
    malformed(payload, "$: bucket name")

    sns = load_payload("eventbridge_via_sns")
    inner = json.loads(sns["Message"])
    inner["detail"]["object"]["key"] = "k\x00"
    sns["Message"] = json.dumps(inner)
    malformed(sns, "$.Message", "NUL")


def test_checked_event_accepts_a_plain_event_built_in_code() -> None:
    event = S3Event(bucket="acme-uploads", key="a b+c%.txt", event_name="ObjectCreated:Put")

    assert checked_event(event, "$") is event


def test_every_record_of_a_lambda_sqs_event_is_judged_alone() -> None:
    event = load_payload("lambda_sqs_mixed")
    event["Records"][0]["body"] = '{"Records": ' + "[" * 5000 + "]" * 5000 + "}"
    event["Records"][1]["messageId"] = "bad\x00id"

    records = sqs_records(event)

    assert [bool(r.problem) for r in records] == [False, True, False, False]
    with pytest.raises(MalformedMessage, match="nested too deeply|expected an object"):
        parse_events(records[0].body)
    assert [len(parse_events(r.body)) for r in records[2:]] == [0, 1]
