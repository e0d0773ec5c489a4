"""Choices in one style: model fields use `TextChoices`, everything else `StrEnum`, and one
concept has one enum. Their text is the value stored in the database and written to logs."""

from __future__ import annotations

import json
from enum import StrEnum

from s3tasks.events import EventSource
from s3tasks.models import EventRecord, ManagedResource
from s3tasks.processing.messages import MessageOutcome, Status
from s3tasks.provisioning.ownership import Origin, ResourceKind


def test_message_statuses_are_a_str_enum_with_the_values_logs_and_metrics_use():
    assert issubclass(Status, StrEnum)
    assert [s.value for s in Status] == [
        "handled",
        "test_event",
        "failed",
        "failed_permanently",
        "deferred",
        "unavailable",
        "malformed",
    ]
    assert f"{Status.FAILED}" == "failed" and json.dumps(Status.HANDLED) == '"handled"'
    assert Status.HANDLED == "handled"


def test_only_handled_test_and_permanently_failed_messages_are_deletable():
    deletable = {s for s in Status if MessageOutcome("m", s).deletable}
    assert deletable == {Status.HANDLED, Status.TEST_EVENT, Status.FAILED_PERMANENTLY}
    assert "DELETABLE" not in Status.__members__


def test_event_sources_are_a_str_enum_with_the_stored_values():
    assert issubclass(EventSource, StrEnum)
    assert [s.value for s in EventSource] == [
        "s3",
        "sns",
        "eventbridge",
        "batch_operations",
        "admin",
        "backfill",
        "unknown",
    ]
    assert f"{EventSource.SNS}" == "sns" and json.dumps(EventSource.S3) == '"s3"'


def test_event_record_source_choices_are_the_event_sources():
    choices = EventRecord._meta.get_field("source").choices
    assert [value for value, _ in choices] == list(EventSource)
    assert dict(choices)["batch_operations"] == "S3 Batch Operations"


def test_the_planner_and_the_ownership_records_share_one_kind_and_one_origin():
    assert ResourceKind is ManagedResource.Kind
    assert Origin is ManagedResource.Origin
    assert ResourceKind("policy_statement") is ManagedResource.Kind.POLICY_STATEMENT
