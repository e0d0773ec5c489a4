"""Hypothesis strategies for poison payloads and the properties envelope parsing must keep.

Shared by tests/test_poison_fuzz.py (a bounded run in CI) and benchmarks/fuzz_envelopes.py
(10,000+ examples). A property returns a description of what went wrong, or None, so the
long run can count failures instead of stopping at the first.

The payloads: random JSON built from the words envelopes use (so the parsers get past
their first checks), real samples (tests/payloads) mutated anywhere — including inside the
JSON strings they nest, such as an SQS body or an SNS Message — and real samples with their
bytes edited.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from payload_files import load_payload, payload_names, payload_text

from s3tasks.envelopes import message_kind, parse_message, sqs_records
from s3tasks.envelopes.limits import storable
from s3tasks.exceptions import MalformedMessage

SAMPLES = payload_names()
MESSAGE_LIMIT = 2500  # an error message, whole; quoted values in it stay near 200 characters

# Words the envelopes look for, so random documents often reach the deeper checks.
KEYS = [
    "Records", "eventSource", "EventSource", "eventName", "eventTime", "awsRegion", "s3",
    "bucket", "name", "object", "key", "size", "eTag", "etag", "versionId", "version-id",
    "sequencer", "Type", "Message", "TopicArn", "Sns", "Event", "source", "detail-type",
    "detail", "reason", "deletion-type", "time", "region", "invocationSchemaVersion",
    "invocationId", "job", "id", "userArguments", "tasks", "taskId", "s3Key", "s3Bucket",
    "s3BucketArn", "s3VersionId", "messageId", "body", "attributes", "eventSourceARN",
]  # fmt: skip
WORDS = [
    "aws:s3", "aws:sns", "aws:sqs", "Notification", "s3:TestEvent", "aws.s3", "Object Created",
    "Object Deleted", "Async Copy Completion", "AWS API Call via CloudTrail", "PutObject",
    "DeleteObject", "Permanently Deleted", "1.0", "2.0", "ObjectCreated:Put",
    "s3:ObjectRemoved:Delete", "2024-05-01T09:20:41Z", "arn:aws:s3:::acme", "acme-uploads",
]  # fmt: skip
AWKWARD = [
    "", "\x00", "\ud800", "a\udc00b", "\ud83d", "²", "٣", "1" * 25, "%00", "%ED%A0%80", "%FF",
    "+", "%2B", "%", "x" * 2000, "é" * 600, "NaN", "\u202e", "\ufeff", "\n", "s3:",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", '{"Records": []}', "[" * 50,
]  # fmt: skip

PATH_DEPTH = 40
JSON_STRING = object()  # a path step: "decode the JSON held in this string"
DELETE = object()  # what a mutation returns to remove a field


def texts() -> st.SearchStrategy[str]:
    """Strings, lone surrogates included (Hypothesis' `text()` leaves them out)."""
    return st.sampled_from(AWKWARD + WORDS) | st.text(st.characters(), max_size=12)


def scalars() -> st.SearchStrategy[Any]:
    return (
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from([-1, 0, 2**63, 10**20, 50 * 2**40 + 1])
        # longer than Python prints (4,300 digits): only a decoded payload can hold one
        | st.integers(4400, 4500).map(lambda digits: 10**digits)
        | st.floats()
        | texts()
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(KEYS) | texts()
    return st.recursive(
        scalars(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=max_leaves,
    )


def encodings(document: Any) -> st.SearchStrategy[Any]:
    """The document as a dict (a Lambda event), as JSON text and as bytes (an SQS body)."""
    text = _dumps(document)
    if text is None:  # too deep or an integer too long to write: only a decoded form exists
        return st.just(document)
    return st.sampled_from([document, text, text.encode("utf-8", "surrogatepass")])


@st.composite
def random_payloads(draw: st.DrawFn) -> Any:
    document = draw(st.dictionaries(_KEYS, _JSON, max_size=5))
    return draw(encodings(document))


@st.composite
def mutated_samples(draw: st.DrawFn) -> Any:
    """A real sample with one to three fields replaced, removed or reshaped, anywhere."""
    document: Any = load_payload(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(document, ()))
        path = draw(st.sampled_from(paths))
        mutation = draw(_MUTATIONS)
        document = _apply(document, path, mutation)
        if document is DELETE:
            document = {}
    if not isinstance(document, dict):
        return document
    return draw(encodings(document))


@st.composite
def byte_edited_samples(draw: st.DrawFn) -> bytes:
    """A real sample's bytes with a few inserted, removed or replaced."""
    data = bytearray(payload_text(draw(st.sampled_from(SAMPLES))).encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.binary(max_size=4) | st.sampled_from([b"\\u0000", b"\\ud800", b"\xff"]))
        cut = draw(st.integers(0, 3))
        data[at : at + cut] = junk
    return bytes(data)


@st.composite
def lambda_sqs_events(draw: st.DrawFn) -> dict[str, Any]:
    """The mixed Lambda SQS sample with records mutated (bodies, ids, attributes, ...)."""
    event: Any = load_payload("lambda_sqs_mixed")
    for _ in range(draw(st.integers(1, 3))):
        record_paths = [p for p in _paths(event, ()) if len(p) >= 2 and p[0] == "Records"]
        path = draw(st.sampled_from(record_paths))
        event = _apply(event, path, draw(_MUTATIONS))
    return event


def violation(payload: Any) -> str | None:
    """What is wrong with how `payload` was parsed, or None: only `MalformedMessage` may
    escape (`message_kind` and `parse_message`), its text stays short, and every event it
    yields can be stored."""
    try:
        message_kind(payload)  # the cheap look Lambda takes first
    except MalformedMessage:
        pass
    except Exception as exc:
        return f"{type(exc).__name__} escaped message_kind: {str(exc)[:200]}"
    try:
        parsed = parse_message(payload)
    except MalformedMessage as exc:
        if len(str(exc)) > MESSAGE_LIMIT:
            return f"MalformedMessage of {len(str(exc)):,} characters"
        return None
    except Exception as exc:
        return f"{type(exc).__name__} escaped parse_message: {str(exc)[:200]}"
    for event in parsed.events:
        problem = unstorable(event)
        if problem:
            return problem
    return None


def sqs_violation(event: Any) -> str | None:
    """`sqs_records` raises only `MalformedMessage` and hands every record back on its own."""
    try:
        records = sqs_records(event)
    except MalformedMessage:
        return None
    except Exception as exc:
        return f"{type(exc).__name__} escaped sqs_records: {str(exc)[:200]}"
    for record in records:
        if not isinstance(record.body, str) or not isinstance(record.message_id, str):
            return f"record {record.message_id!r} has a body or id that is no string"
        if record.problem and len(record.problem) > MESSAGE_LIMIT:
            return f"record problem of {len(record.problem):,} characters"
        if not record.problem and not storable(record.message_id):
            return f"record id {record.message_id[:50]!r} cannot be stored"
        if not record.problem and (problem := violation(record.body)):
            return problem
    return None


def unstorable(event: Any) -> str | None:
    """Why `event` could not be recorded as an `EventRecord` (on PostgreSQL), or None."""
    from django.core.exceptions import ValidationError

    from s3tasks.events import S3Event
    from s3tasks.processing.runs import new_record

    try:
        record = new_record(event, "message-id", "queue")
        record.clean_fields()  # max_length, choices, blank; no database needed
        payload = json.dumps(record.payload, allow_nan=False)  # PostgreSQL's jsonb refuses NaN
        S3Event.from_dict(json.loads(payload))  # what Celery carries comes back
    except ValidationError as exc:
        return f"EventRecord would not validate: {exc.message_dict}"
    except Exception as exc:
        return f"{type(exc).__name__} storing {event.bucket[:40]!r}/{event.key[:40]!r}: {exc}"
    for field in ("bucket", "key", "event_name", "etag", "version_id", "sequencer", "region"):
        value = getattr(record, field)
        if not storable(value):
            return f"EventRecord.{field} {value[:40]!r} holds a NUL or a lone surrogate"
    if event.event_time is not None and event.event_time.utcoffset() is None:
        return "event_time without a timezone"
    if event.size is not None and not (0 <= event.size < 2**63):
        return f"size {event.size} does not fit a bigint"
    return None


# --- mutations ---------------------------------------------------------------------------


def _mutations() -> st.SearchStrategy[Callable[[Any], Any]]:
    replace = json_values(8).map(lambda value: lambda _old: value)
    nest = st.integers(30, 3000).map(lambda depth: lambda old: _nest(old, depth))
    edit = st.tuples(st.integers(0, 50), texts()).map(lambda cut: lambda old: _edit_text(old, *cut))
    return (
        replace
        | edit
        | nest
        | st.just(lambda _old: DELETE)
        | st.just(lambda old: [old])
        | st.just(_repeat)
        | st.just(lambda old: _dumps(old) if not isinstance(old, str) else old)
        | st.just(lambda old: -old if isinstance(old, int | float) else math.nan)
    )


def _dumps(document: Any) -> str | None:
    """JSON text as Python writes it (NaN, lone surrogates escaped), or None if it cannot."""
    try:
        return json.dumps(document)
    except (ValueError, TypeError, RecursionError):
        return None


def _repeat(value: Any) -> Any:
    """A string or list many times longer (but bounded: mutations may apply three times)."""
    if isinstance(value, str) and len(value) <= 2000:
        return value * (300_000 // max(len(value), 1) + 1)
    if isinstance(value, list) and len(value) <= 10:
        return value * 50
    return value


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def _edit_text(value: Any, at: int, text: str) -> Any:
    if not isinstance(value, str):
        return text
    return value[:at] + text + value[at:]


def _paths(value: Any, path: tuple[Any, ...]):
    """Every location in a document, descending into JSON held in strings (not below
    `PATH_DEPTH`: an earlier mutation may have nested a value thousands of levels deep)."""
    yield path
    if len(path) >= PATH_DEPTH:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*path, index))
    elif isinstance(value, str) and value.startswith("{"):
        try:
            inner = json.loads(value)
        except ValueError:
            return
        yield from _paths(inner, (*path, JSON_STRING))


def _apply(value: Any, path: tuple[Any, ...], mutation: Callable[[Any], Any]) -> Any:
    if not path:
        return mutation(value)
    step, rest = path[0], path[1:]
    if step is JSON_STRING:
        inner = _apply(json.loads(value), rest, mutation)
        text = None if inner is DELETE else _dumps(inner)
        return inner if text is None else text  # unwritable: the decoded value replaces it
    changed = _apply(value[step], rest, mutation)
    copy = list(value) if isinstance(value, list) else dict(value)
    if changed is DELETE:
        del copy[step]
    else:
        copy[step] = changed
    return copy


# Built once: a strategy rebuilt on every draw costs more than the parsing it feeds.
_KEYS = st.sampled_from(KEYS) | texts()
_JSON = json_values()
_MUTATIONS = _mutations()
