"""On PostgreSQL a batch's rows travel as ONE JSON parameter (`runs._json_rows`), read back by
`json_populate_recordset` as the table's row type. Every value must arrive exactly as
Django's own INSERT/UPDATE would store it; values JSON cannot carry fall back to one
placeholder per value.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import connection
from django.db.models import JSONField, UUIDField
from django.test.utils import CaptureQueriesContext

from s3tasks.models import EventRecord, HandlerRun, RunState
from s3tasks.processing.runs import _json_rows, new_record, record_events, update_rows
from tests.factories import make_event

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

AWKWARD = [
    'in/quote\'s "double" back\\slash.csv',
    "in/ünïcødé ✓ 😀.csv",
    "in/new\nline\ttab.csv",
    "in/%s %(name)s {braces} $1.csv",
]


def awkward_event(key: str, i: int):
    event = make_event(key)
    raw = {**event.raw, "nested": {"list": [1, 2.5, None, True], "text": key, "big": 2**62}}
    return replace(
        event,
        event_time=datetime(
            2026, 2, 3, 4, 5, 6, 789012, tzinfo=timezone(timedelta(hours=5, minutes=30))
        ),
        size=2**53 + i,  # beyond a double's exact integers
        raw=raw,
    )


def test_a_batch_sent_as_json_stores_every_value_as_django_would():
    events = [awkward_event(key, i) for i, key in enumerate(AWKWARD)]
    with CaptureQueriesContext(connection) as queries:
        recorded = record_events((e, f"m-{i}", "q") for i, e in enumerate(events))
    assert "json_populate_recordset" in queries.captured_queries[0]["sql"]
    for event in events:
        stored = EventRecord.objects.get(pk=recorded.ids[event.dedup_key])
        django_made = new_record(event, "", "q")
        django_made.dedup_key = f"made-by-django-{event.key[:20]}"
        django_made.save()
        again = EventRecord.objects.get(pk=django_made.pk)
        for field in ("key", "event_time", "size", "payload", "etag", "sequencer", "received_at"):
            if field == "received_at":  # a default: set when each was made
                assert abs(stored.received_at - again.received_at) < timedelta(minutes=1)
                continue
            assert getattr(stored, field) == getattr(again, field), field
        assert stored.event_time == datetime(2026, 2, 2, 22, 35, 6, 789012, tzinfo=UTC)
        assert stored.payload["raw"]["nested"]["big"] == 2**62


def test_outcomes_of_several_runs_are_written_as_json_exactly():
    events = [awkward_event(key, i) for i, key in enumerate(AWKWARD)]
    recorded = record_events((e, "", "") for e in events)
    runs = [
        HandlerRun.objects.create(event_id=recorded.ids[e.dedup_key], handler_name="h")
        for e in events
    ]
    finished = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    for i, run in enumerate(runs):
        run.state = RunState.FAILED
        run.attempts = 3 + i
        run.finished_at = finished
        run.duration_ms = 0.1 + i / 3
        run.error = AWKWARD[i]
        run.lease_expires_at = None
    with CaptureQueriesContext(connection) as queries:
        update_rows(
            runs, ["state", "attempts", "finished_at", "duration_ms", "error", "lease_expires_at"]
        )
    assert "json_populate_recordset" in queries.captured_queries[0]["sql"]
    for i, run in enumerate(runs):
        saved = HandlerRun.objects.get(pk=run.pk)
        assert (saved.state, saved.attempts, saved.finished_at) == ("failed", 3 + i, finished)
        assert (saved.duration_ms, saved.error, saved.lease_expires_at) == (
            0.1 + i / 3,
            AWKWARD[i],
            None,
        )


def test_values_json_cannot_carry_fall_back_to_one_placeholder_each():
    meta = EventRecord._meta
    fields = [meta.get_field("key"), meta.get_field("size")]
    assert _json_rows(connection, fields, [EventRecord(key="k", size=1)], saving=True) is not None
    an_id = UUIDField()  # psycopg adapts a uuid.UUID; json.dumps cannot
    an_id.set_attributes_from_name("key")
    an_id.model = EventRecord
    assert _json_rows(connection, [an_id], [EventRecord(key=uuid.uuid4())], saving=True) is None
    nan = HandlerRun(duration_ms=float("nan"))
    duration = HandlerRun._meta.get_field("duration_ms")
    assert _json_rows(connection, [duration], [nan], saving=True) is None
    sql_null = EventRecord(payload=None)  # SQL NULL, which JSON's null would not say
    assert _json_rows(connection, [meta.get_field("payload")], [sql_null], saving=True) is None


def test_a_json_field_with_its_own_encoder_keeps_djangos_encoding():
    field = JSONField(encoder=type("Encoder", (), {}))
    field.set_attributes_from_name("payload")
    field.model = EventRecord
    assert _json_rows(connection, [field], [EventRecord(payload={})], saving=True) is None


def test_a_value_not_of_its_fields_type_still_gets_djangos_preparation():
    recorded = record_events((make_event(f"prep-{i}.csv"), "", "") for i in range(2))
    runs = [
        HandlerRun.objects.create(event_id=pk, handler_name="h") for pk in recorded.ids.values()
    ]
    for run in runs:
        run.state = RunState.SUCCEEDED  # a TextChoices member: a str
        run.attempts = "4"  # Django's IntegerField preparation makes it 4
        run.duration_ms = 2  # an int for a FloatField
        run.result_summary = 12  # Django's TextField preparation makes it "12"
    update_rows(runs, ["state", "attempts", "duration_ms", "result_summary"])
    for run in runs:
        saved = HandlerRun.objects.get(pk=run.pk)
        assert (saved.state, saved.attempts, saved.duration_ms) == ("succeeded", 4, 2.0)
        assert saved.result_summary == "12"
