"""The SNS HTTP(S) endpoint view: thin wiring from a POST to verification and the batch core.

Answers (docs/sns-endpoint.md has the full table; SNS retries only 5xx and timeouts):

- not verified (forged, stale, unknown topic, untrusted certificate, ...) → 403, nothing runs;
- cannot verify or confirm right now (certificate host unreachable) → 503;
- SubscriptionConfirmation → SubscribeURL visited → 200;
- UnsubscribeConfirmation → logged → 200;
- Notification → the S3 events parsed, routed and dispatched exactly once through the core
  `sqs_worker` uses → 200 once they are recorded or handed off; 500/503 otherwise, so SNS
  delivers again (a malformed message also gets a `MessageFailure` row, as in the worker).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from s3tasks.conf import get_settings
from s3tasks.exceptions import SnsVerificationUnavailable, UnverifiedSnsMessage
from s3tasks.processing.message_failures import record_malformed_outcomes
from s3tasks.processing.messages import InboundMessage, Status, process_message
from s3tasks.sns.confirmation import confirm_subscription
from s3tasks.sns.messages import (
    SUBSCRIPTION_CONFIRMATION,
    UNSUBSCRIBE_CONFIRMATION,
    SnsMessage,
    read_message,
)
from s3tasks.sns.verification import verify_message

logger = logging.getLogger("s3tasks.sns")

# One answer for every refusal: why is in the log, never in the response.
REFUSED = "Not a verified SNS message for a known topic.\n"

# What a notification's outcome answers SNS: 2xx only once nothing is left to do here.
RESPONSE_STATUS: dict[Status, int] = {
    Status.HANDLED: 200,
    Status.TEST_EVENT: 200,
    Status.FAILED_PERMANENTLY: 200,  # the run history keeps the event and its error
    Status.FAILED: 500,  # a handler will be retried: SNS delivers again
    Status.MALFORMED: 500,  # recorded; SNS retries, then its subscription DLQ keeps it
    Status.DEFERRED: 503,  # a handler of a newer release is not registered here yet
    Status.UNAVAILABLE: 503,  # the database or broker cannot be reached
}


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def sns_endpoint(request: HttpRequest) -> HttpResponse:
    """Accept one SNS HTTP(S) delivery (see the module docstring for the answers)."""
    try:
        message = read_message(
            request.body, header_type=request.headers.get("x-amz-sns-message-type")
        )
        verify_message(message)
    except UnverifiedSnsMessage as exc:
        logger.warning(
            "s3tasks: refused an SNS POST from %s: %s", _client(request), exc, extra=_fields()
        )
        return HttpResponse(REFUSED, status=403)
    except SnsVerificationUnavailable as exc:
        logger.error("s3tasks: cannot verify an SNS message now (SNS will retry): %s", exc)
        return HttpResponse("Cannot verify the message now; retry.\n", status=503)
    if message.type == SUBSCRIPTION_CONFIRMATION:
        return _confirm(message)
    if message.type == UNSUBSCRIBE_CONFIRMATION:
        logger.info(
            "s3tasks: SNS unsubscribed this endpoint from topic %s",
            message.topic_arn,
            extra=_fields(message),
        )
        return HttpResponse("OK\n")
    return _notify(message)


def _confirm(message: SnsMessage) -> HttpResponse:
    try:
        confirm_subscription(message)
    except UnverifiedSnsMessage as exc:
        logger.warning("s3tasks: refused an SNS subscription confirmation: %s", exc)
        return HttpResponse(REFUSED, status=403)
    except SnsVerificationUnavailable as exc:
        logger.error("s3tasks: could not confirm the SNS subscription (SNS will retry): %s", exc)
        return HttpResponse("Could not confirm the subscription now; retry.\n", status=503)
    logger.info(
        "s3tasks: confirmed the SNS subscription of this endpoint to topic %s",
        message.topic_arn,
        extra=_fields(message),
    )
    return HttpResponse("OK\n")


def _notify(message: SnsMessage) -> HttpResponse:
    inbound = InboundMessage(
        message_id=message.message_id,
        body=message.document,
        queue_name=f"sns:{message.topic_name}",  # queue names hold no ':'; never a clash
    )
    outcome = process_message(inbound, dispatch_mode=get_settings().DISPATCH)
    if outcome.status == Status.MALFORMED:
        record_malformed_outcomes([inbound], [outcome])
    status = RESPONSE_STATUS[outcome.status]
    log = logger.info if status < 300 else logger.warning
    log(
        "s3tasks: SNS message %s from topic %s: %s (%d event(s), %d run(s)) → HTTP %d%s",
        message.message_id,
        message.topic_arn,
        outcome.status,
        outcome.events,
        outcome.runs,
        status,
        f": {outcome.error}" if outcome.error else "",
        extra={**_fields(message), "outcome": str(outcome.status)},
    )
    return HttpResponse("OK\n" if status < 300 else f"{outcome.status}\n", status=status)


def _fields(message: SnsMessage | None = None) -> dict[str, Any]:
    """The `extra=` of a log line (JSON logs show these fields)."""
    if message is None:
        return {"source": "sns-endpoint"}
    return {"source": "sns-endpoint", "message_id": message.message_id, "topic": message.topic_arn}


def _client(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "?")
