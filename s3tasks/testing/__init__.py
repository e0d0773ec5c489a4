"""Test your handlers without AWS: realistic events and envelopes, synchronous delivery
through s3tasks' routing and exactly-once dispatch, captured follow-up commands.

    from s3tasks.testing import captured_followups, deliver, make_s3_event

    delivery = deliver(make_s3_event("acme-uploads", "incoming/red flower.csv"))
    assert delivery.handlers_run == ["myapp.handlers.import_csv"]

Names are imported lazily, so the pytest plugin (`s3tasks.testing.pytest_plugin`) can load
before Django is set up. docs/testing.md has the guide.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EVENTBRIDGE_EVENT_NAMES": "s3tasks.testing.payloads",
    "make_s3_event": "s3tasks.testing.payloads",
    "s3_record": "s3tasks.testing.payloads",
    "s3_notification": "s3tasks.testing.payloads",
    "s3_test_event": "s3tasks.testing.payloads",
    "sns_envelope": "s3tasks.testing.payloads",
    "lambda_sns_event": "s3tasks.testing.payloads",
    "sqs_message": "s3tasks.testing.payloads",
    "lambda_sqs_event": "s3tasks.testing.payloads",
    "eventbridge_event": "s3tasks.testing.payloads",
    "encode_key": "s3tasks.testing.payloads",
    "deliver": "s3tasks.testing.delivery",
    "Delivery": "s3tasks.testing.delivery",
    "DeliveredRun": "s3tasks.testing.delivery",
    "captured_followups": "s3tasks.testing.followups",
    "FollowUpCapture": "s3tasks.testing.followups",
}

__all__ = [
    "DeliveredRun",
    "Delivery",
    "EVENTBRIDGE_EVENT_NAMES",
    "FollowUpCapture",
    "captured_followups",
    "deliver",
    "encode_key",
    "eventbridge_event",
    "lambda_sns_event",
    "lambda_sqs_event",
    "make_s3_event",
    "s3_notification",
    "s3_record",
    "s3_test_event",
    "sns_envelope",
    "sqs_message",
]

if TYPE_CHECKING:
    from s3tasks.testing.delivery import DeliveredRun, Delivery, deliver
    from s3tasks.testing.followups import FollowUpCapture, captured_followups
    from s3tasks.testing.payloads import (
        EVENTBRIDGE_EVENT_NAMES,
        encode_key,
        eventbridge_event,
        lambda_sns_event,
        lambda_sqs_event,
        make_s3_event,
        s3_notification,
        s3_record,
        s3_test_event,
        sns_envelope,
        sqs_message,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 's3tasks.testing' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
