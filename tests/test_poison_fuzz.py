"""Property-based poison tests (Hypothesis): random JSON, real samples mutated anywhere (also
inside the JSON an SQS body or SNS Message holds) and real samples with edited bytes. Only
`MalformedMessage` may escape parsing, and every event that comes out can be stored.

Bounded for CI: `S3TASKS_FUZZ_EXAMPLES` examples per property (default 60, a few seconds
in all), no deadline flakiness (a generous 5 s per example), no example database written
into the work tree. benchmarks/fuzz_envelopes.py runs the same properties 10,000+ times.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from payload_files import load_payload
from poison_cases import (
    byte_edited_samples,
    lambda_sqs_events,
    mutated_samples,
    random_payloads,
    sqs_violation,
    unstorable,
    violation,
)

from s3tasks.envelopes import parse_events

CI = settings(
    max_examples=int(os.environ.get("S3TASKS_FUZZ_EXAMPLES", "60")),
    deadline=timedelta(seconds=5),  # catches a pathological slowdown, never a busy machine
    database=None,  # no .hypothesis/ directory in the shared work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,  # a failure prints how to reproduce it exactly
)


@CI
@given(random_payloads())
def test_random_json_raises_only_malformed_message(payload: Any) -> None:
    assert violation(payload) is None


@CI
@given(mutated_samples())
def test_mutated_real_payloads_raise_only_malformed_message_or_give_storable_events(
    payload: Any,
) -> None:
    assert violation(payload) is None


@CI
@given(byte_edited_samples())
def test_real_payloads_with_edited_bytes_raise_only_malformed_message(payload: bytes) -> None:
    assert violation(payload) is None


@CI
@given(lambda_sqs_events())
def test_mutated_lambda_sqs_events_split_into_records_that_fail_alone(event: Any) -> None:
    assert sqs_violation(event) is None


def test_the_property_holds_for_every_unmutated_sample() -> None:
    """The checks themselves accept real payloads (a property that always fails tests nothing)."""
    from payload_files import payload_names

    for name in payload_names():
        assert violation(load_payload(name)) is None, name
        for event in parse_events(load_payload(name)):
            assert unstorable(event) is None
